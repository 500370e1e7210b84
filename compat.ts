/**
 * sharmipc/compat: the .NET SharmIPC API (`SharmIpc`, `SharmNpc`) on top of sharmipc's own
 * `open`/`Channel`. The code is `lib/compat.ts`; this entry only says what is public.
 *
 * @packageDocumentation
 */
export * from './lib/compat'
