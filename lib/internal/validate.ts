/**
 * Argument checks shared by the modules of the package: each throws a TypeError or RangeError that
 * says what was expected and what was found, with Node's code for it (`ERR_INVALID_ARG_TYPE`,
 * `ERR_INVALID_ARG_VALUE`, `ERR_OUT_OF_RANGE`), as Node's own functions do. Not part of the
 * package's API.
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

/** Node's codes for a bad argument. */
export type ArgErrorCode = 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE'

/** An argument of the wrong type: a TypeError with code `ERR_INVALID_ARG_TYPE`. */
export function argType(message: string): TypeError & { code: 'ERR_INVALID_ARG_TYPE' } {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' as const })
}

/**
 * An argument of the right type but a value that is not accepted (an unknown option, a bad name):
 * code `ERR_INVALID_ARG_VALUE`, a TypeError unless `range` (then a RangeError).
 */
export function argValue(message: string, range = false): Error & { code: 'ERR_INVALID_ARG_VALUE' } {
  return Object.assign(range ? new RangeError(message) : new TypeError(message), {
    code: 'ERR_INVALID_ARG_VALUE' as const,
  })
}

/** A number outside its range: a RangeError with code `ERR_OUT_OF_RANGE`. */
export function outOfRange(message: string): RangeError & { code: 'ERR_OUT_OF_RANGE' } {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' as const })
}

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
  if (typeof v !== 'number') {
    throw argType(`${what} must be a number of milliseconds from 1 to ${MAX_TIMEOUT_MS}, got ${describe(v)}`)
  }
  if (!Number.isFinite(v) || v <= 0 || v > MAX_TIMEOUT_MS) {
    throw outOfRange(`${what} must be a number of milliseconds from 1 to ${MAX_TIMEOUT_MS}, got ${describe(v)}`)
  }
  return v
}

/** An integer from `min` to `max`; `what` names it in the error. */
export function checkInt(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number') throw argType(`${what} must be an integer, got ${describe(v)}`)
  if (!Number.isInteger(v)) throw outOfRange(`${what} must be an integer, got ${describe(v)}`)
  if (v < min || v > max) throw outOfRange(`${what} must be from ${min} to ${max}, got ${v}`)
  return v
}

/** A function or nothing; `what` names it in the error. */
export function checkFunction<F>(v: F | undefined, what: string): F | undefined {
  if (v !== undefined && typeof v !== 'function') throw argType(`${what} must be a function, got ${describe(v)}`)
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
  throw argType(`${what} must be an AbortSignal, got ${describe(v)}`)
}

/** What may be sent: bytes, or a string (sent as UTF-8, as a socket does). */
export type Payload = Buffer | Uint8Array | string

/** Bytes to send: a Buffer or another Uint8Array, or a string, encoded as UTF-8. */
export function toBytes(data: unknown, what: string): Uint8Array {
  if (data instanceof Uint8Array) return data
  if (typeof data === 'string') return Buffer.from(data, 'utf8')
  throw argType(`${what} must be a Buffer, a Uint8Array or a string, got ${describe(data)}`)
}

/** A channel name: 1 to 128 bytes of A-Z a-z 0-9 . _ - */
export function checkName(name: unknown): string {
  if (typeof name !== 'string') throw argType(`channel name must be a string, got ${describe(name)}`)
  const bytes = Buffer.byteLength(name)
  if (bytes === 0 || bytes > MAX_NAME_BYTES) {
    throw argValue(`channel name must be 1 to ${MAX_NAME_BYTES} bytes long, got ${bytes}`, true)
  }
  if (!NAME_PATTERN.test(name)) {
    throw argValue(`channel name may contain only A-Z a-z 0-9 . _ -, got ${JSON.stringify(name)}`, true)
  }
  return name
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e))
}

export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function'
}
