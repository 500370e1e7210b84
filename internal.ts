/**
 * Helpers shared by the modules of the package (index, compat); not part of its API.
 *
 * @internal
 * @packageDocumentation
 */

/** Longest timeout Node's timers take (about 24.8 days). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1

export const EMPTY = Buffer.alloc(0)

/** Says what a bad argument was, for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (v === undefined) return 'undefined'
  if (Array.isArray(v)) return `an array of length ${v.length}`
  if (typeof v === 'function') return `a function with ${v.length} parameters`
  if (typeof v === 'object') return `an instance of ${(v as object).constructor?.name ?? 'Object'}`
  if (typeof v === 'string') return `a string (${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)})`
  return `${typeof v} ${String(v)}`
}

/** A timeout in ms, 1 to MAX_TIMEOUT_MS; `what` names it in the error. */
export function checkTimeout(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > MAX_TIMEOUT_MS) {
    throw new RangeError(`${what} must be a number of milliseconds from 1 to ${MAX_TIMEOUT_MS}, got ${describe(v)}`)
  }
  return v
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e))
}

export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function'
}
