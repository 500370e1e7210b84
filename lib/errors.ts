/**
 * The errors sharmipc raises: one class per condition a caller may handle, each with a stable
 * `code`, and the one table that turns an error thrown by the native layer (a JS error whose
 * `code` is the core's) into its class.
 *
 * @packageDocumentation
 */
import { asError } from './internal/validate'

/** Every `code` a {@link SharmError} (or a TypeError of sharmipc's) can carry. */
export type SharmErrorCode =
  | 'ERR_SHARM_TIMEOUT'
  | 'ERR_SHARM_PEER_GONE'
  | 'ERR_SHARM_QUEUE_FULL'
  | 'ERR_SHARM_TOO_LARGE'
  | 'ERR_SHARM_BUSY'
  | 'ERR_SHARM_PROTOCOL'
  | 'ERR_SHARM_CLOSED'
  | 'ERR_SHARM_REMOTE'
  | 'ERR_SHARM_OS'
  | 'ERR_SHARM_INVALID'
  | 'ERR_SHARM_NO_BINARY'

/** Base class of every error sharmipc raises; `code` is a stable `ERR_SHARM_*` string. */
export class SharmError extends Error {
  readonly code: SharmErrorCode
  constructor(code: SharmErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** No answer arrived within the request's timeout. Code `ERR_SHARM_TIMEOUT`. */
export class TimeoutError extends SharmError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_SHARM_TIMEOUT', message, options)
  }
}

/** Did a request that failed with the peer reach it? */
export type Reached = 'no' | 'maybe' | 'yes'

/** What a {@link PeerGoneError} hands back besides its message. */
export interface NotDone {
  /**
   * For a request: `'no'` it never reached the peer (safe to send again), `'maybe'` the peer's
   * process had taken it when it stopped, `'yes'` its handler got it.
   */
  reached?: Reached
  /** Accepted messages that were surely not delivered, in the order sent. */
  undelivered?: Buffer[]
  /** Accepted messages that may or may not have been delivered, in the order sent. */
  inDoubt?: Buffer[]
}

/**
 * The peer process left (closed or died) before answering, or before accepted messages were
 * delivered. Code `ERR_SHARM_PEER_GONE`. What was not done is handed back: for a request,
 * `reached` says whether it reached the peer; for messages (when `close()` could not deliver
 * everything), `undelivered` and `inDoubt` hold them.
 */
export class PeerGoneError extends SharmError {
  readonly reached: Reached | undefined
  readonly undelivered: Buffer[]
  readonly inDoubt: Buffer[]
  constructor(message: string, notDone: NotDone = {}, options?: ErrorOptions) {
    super('ERR_SHARM_PEER_GONE', message, options)
    this.reached = notDone.reached
    this.undelivered = notDone.undelivered ?? []
    this.inDoubt = notDone.inDoubt ?? []
  }
}

/** The send queue is over `maxQueueBytes`; nothing was taken. Code `ERR_SHARM_QUEUE_FULL`. */
export class QueueFullError extends SharmError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_SHARM_QUEUE_FULL', message, options)
  }
}

/** The message is larger than `maxMessageBytes`. Code `ERR_SHARM_TOO_LARGE`. */
export class TooLargeError extends SharmError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_SHARM_TOO_LARGE', message, options)
  }
}

/** Two live processes already hold the channel. Code `ERR_SHARM_BUSY`. */
export class BusyError extends SharmError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_SHARM_BUSY', message, options)
  }
}

/**
 * The peer wrote something that is not valid sharmipc, or the segment has another layout or
 * protocol version (the message names both). Code `ERR_SHARM_PROTOCOL`.
 */
export class ProtocolError extends SharmError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_SHARM_PROTOCOL', message, options)
  }
}

/** The channel is closed. Code `ERR_SHARM_CLOSED`. */
export class ClosedError extends SharmError {
  constructor(message = 'channel is closed', options?: ErrorOptions) {
    super('ERR_SHARM_CLOSED', message, options)
  }
}

/** The peer's handler threw or rejected; `remoteMessage` is its error message. Code `ERR_SHARM_REMOTE`. */
export class RemoteError extends SharmError {
  readonly remoteMessage: string
  constructor(remoteMessage: string) {
    super('ERR_SHARM_REMOTE', `the peer's handler failed: ${remoteMessage}`)
    this.remoteMessage = remoteMessage
  }
}

/**
 * An operation was aborted through its AbortSignal: the same shape as Node's own (`name`
 * `'AbortError'`, `code` `'ABORT_ERR'`, `cause` the signal's reason). Not a {@link SharmError}.
 */
export class AbortError extends Error {
  readonly code = 'ABORT_ERR'
  constructor(message = 'The operation was aborted', options?: ErrorOptions) {
    super(message, options)
    this.name = 'AbortError'
  }
}

/** The error of a request whose signal aborted with `reason`. */
export function aborted(reason: unknown): AbortError {
  return new AbortError(undefined, { cause: reason })
}

/** A request (`what` names it) got no answer within `timeoutMs`. */
export function timedOut(what: string, timeoutMs: number): TimeoutError {
  return new TimeoutError(`no answer to ${what} within ${timeoutMs} ms`)
}

/** The codes the native layer throws with (the core's), and what each becomes here. */
export const NATIVE_ERRORS = {
  ERR_SHARM_TIMEOUT: (m: string): Error => new TimeoutError(m),
  ERR_SHARM_PEER_GONE: (m: string): Error => new PeerGoneError(m),
  ERR_SHARM_QUEUE_FULL: (m: string): Error => new QueueFullError(m),
  ERR_SHARM_TOO_LARGE: (m: string): Error => new TooLargeError(m),
  ERR_SHARM_BUSY: (m: string): Error => new BusyError(m),
  ERR_SHARM_PROTOCOL: (m: string): Error => new ProtocolError(m),
  ERR_SHARM_CLOSED: (m: string): Error => new ClosedError(m),
  // The native layer's message is the remote one as it came.
  ERR_SHARM_REMOTE: (m: string): Error => new RemoteError(m),
  ERR_SHARM_OS: (m: string): Error => new SharmError('ERR_SHARM_OS', m),
  // A bad argument that only the native side could see.
  ERR_SHARM_INVALID: (m: string): Error => Object.assign(new TypeError(m), { code: 'ERR_SHARM_INVALID' }),
} satisfies Partial<Record<SharmErrorCode, (message: string) => Error>>

/**
 * `e` as a {@link SharmError} (for the `'error'` event): itself if it is one, else a SharmError
 * with its `code` if that is one of ours (`ERR_SHARM_OS` otherwise) and `e` as `cause`.
 */
export function toSharmError(e: unknown): SharmError {
  if (e instanceof SharmError) return e
  const err = asError(e)
  const code = (err as { code?: unknown }).code
  const known = typeof code === 'string' && (ALL_CODES as readonly string[]).includes(code)
  return new SharmError(known ? (code as SharmErrorCode) : 'ERR_SHARM_OS', err.message, { cause: err })
}

/** Every {@link SharmErrorCode}, as a list. */
export const ALL_CODES = [
  'ERR_SHARM_TIMEOUT',
  'ERR_SHARM_PEER_GONE',
  'ERR_SHARM_QUEUE_FULL',
  'ERR_SHARM_TOO_LARGE',
  'ERR_SHARM_BUSY',
  'ERR_SHARM_PROTOCOL',
  'ERR_SHARM_CLOSED',
  'ERR_SHARM_REMOTE',
  'ERR_SHARM_OS',
  'ERR_SHARM_INVALID',
  'ERR_SHARM_NO_BINARY',
] as const satisfies readonly SharmErrorCode[]

/** Turns an error thrown by the native layer into its class, by its `code`. */
export function fromNative(e: unknown): Error {
  const code = (e as { code?: unknown } | null)?.code
  if (e instanceof Error && typeof code === 'string' && Object.hasOwn(NATIVE_ERRORS, code)) {
    return NATIVE_ERRORS[code as keyof typeof NATIVE_ERRORS](e.message)
  }
  return asError(e)
}
