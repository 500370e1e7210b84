/**
 * The native part: loaded once, through the loader napi generates (`#binding`, see the package's
 * `imports`), which takes a `.node` file next to it (a build from source) or this platform's
 * package (`sharmipc-<platform>-<arch>[-<abi>]`). When nothing loads, the error names the
 * platform and each file and package that was tried, and why it failed.
 *
 * The numbers the facade exchanges with the native side (record kinds, send results, the layout
 * of `pollInto`'s output) come from here, as the binding exports them; each module copies the
 * ones it reads into module-level constants once.
 *
 * @internal
 * @packageDocumentation
 */
import type * as Binding from '#binding'

import { SharmError } from '../errors'

export type NativeChannel = Binding.NativeChannel
export type NativeLobby = Binding.NativeLobby
export type PeerChange = Binding.PeerChange

export const native: typeof Binding = load()

function load(): typeof Binding {
  try {
    return require('#binding')
  } catch (e) {
    const linux = process.platform === 'linux'
    const header = linux ? (process.report?.getReport() as any)?.header : undefined
    const libc = !header ? '' : header.glibcVersionRuntime ? `, glibc ${header.glibcVersionRuntime}` : ', musl libc'
    const tried: string[] = []
    // The loader's own error is a summary; the attempts are its chain of causes.
    for (let c: any = (e as any)?.cause ?? e; c != null; c = c.cause) {
      const first = String(c.message ?? c).split('\n')[0]
      const missing = /^Cannot find module '([^']+)'/.exec(first)
      tried.unshift(missing ? `${missing[1]} (not found)` : first)
    }
    const override = process.env.NAPI_RS_NATIVE_LIBRARY_PATH
    if (override) tried.unshift(`NAPI_RS_NATIVE_LIBRARY_PATH=${override} replaces the search`)
    throw new SharmError(
      'ERR_SHARM_NO_BINARY',
      `sharmipc: no native binary loads on ${process.platform} ${process.arch}${libc} (Node ${process.version}). ` +
        `Tried: ${tried.join('; ')}. Prebuilt packages exist for linux x64/arm64 (glibc and musl), ` +
        `darwin x64/arm64 and win32 x64; npm installs the one matching this platform as an optional ` +
        `dependency (not with --omit=optional, and not when node_modules was installed on another platform). ` +
        `Elsewhere, build from source: npm run build in a clone of the repository.`,
      { cause: e },
    )
  }
}
