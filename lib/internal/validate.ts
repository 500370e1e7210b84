/**
 * Argument checks shared by the modules of the package: each throws a TypeError or RangeError that
 * says what was expected and what was found. Not part of the package's API.
 *
 * @internal
 * @packageDocumentation
 */

/** Longest timeout Node's timers take (about 24.8 days). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1

/** Longest channel name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 128
const NAME_PATTERN = /^[A-Za-z0-9._-]+$/

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

/** An integer from `min` to `max`; `what` names it in the error. */
export function checkInt(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new TypeError(`${what} must be an integer, got ${describe(v)}`)
  }
  if (v < min || v > max) throw new RangeError(`${what} must be from ${min} to ${max}, got ${v}`)
  return v
}

/** A function or nothing; `what` names it in the error. */
export function checkFunction<F>(v: F | undefined, what: string): F | undefined {
  if (v !== undefined && typeof v !== 'function') throw new TypeError(`${what} must be a function, got ${describe(v)}`)
  return v
}

/** An AbortSignal or nothing (one of another realm passes too); `what` names it in the error. */
export function checkSignal(v: unknown, what: string): AbortSignal | undefined {
  if (v === undefined || v instanceof AbortSignal) return v
  const s = v as AbortSignal | null
  if (
    s !== null &&
    typeof s === 'object' &&
    typeof s.aborted === 'boolean' &&
    typeof s.addEventListener === 'function' &&
    typeof s.removeEventListener === 'function'
  ) {
    return s
  }
  throw new TypeError(`${what} must be an AbortSignal, got ${describe(v)}`)
}

/** Bytes to send: a Buffer or another Uint8Array. */
export function toBytes(data: unknown, what: string): Uint8Array {
  if (data instanceof Uint8Array) return data
  throw new TypeError(`${what} must be a Buffer or Uint8Array, got ${describe(data)}`)
}

/** A channel name: 1 to 128 bytes of A-Z a-z 0-9 . _ - */
export function checkName(name: unknown): string {
  if (typeof name !== 'string') throw new TypeError(`channel name must be a string, got ${describe(name)}`)
  const bytes = Buffer.byteLength(name)
  if (bytes === 0 || bytes > MAX_NAME_BYTES) {
    throw new RangeError(`channel name must be 1 to ${MAX_NAME_BYTES} bytes long, got ${bytes}`)
  }
  if (!NAME_PATTERN.test(name)) {
    throw new RangeError(`channel name may contain only A-Z a-z 0-9 . _ -, got ${JSON.stringify(name)}`)
  }
  return name
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e))
}

export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function'
}
