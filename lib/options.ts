/**
 * The options of `open()` and of a request: their types, defaults and checks.
 *
 * @packageDocumentation
 */
import type { RequestContext } from './request-context'
import type { StreamHandler } from './streams'
import { argType, argValue, checkFunction, checkInt, checkTimeout, describe } from './internal/validate'

/** What a request handler may return (or resolve to). `undefined` answers with an empty Buffer. */
export type Answer = Buffer | Uint8Array | undefined | void

/** Handles a request from the peer. Throwing or rejecting answers with `ERR_SHARM_REMOTE`. */
export type RequestHandler = (data: Buffer, ctx: RequestContext) => Answer | Promise<Answer>

/** Options of {@link open}. */
export interface OpenOptions {
  /** Answers the peer's requests. Without it, requests are answered with an error. */
  onRequest?: RequestHandler
  /**
   * Answers the peer's `requestStream`s: gets the request data and a Readable of the body the
   * peer streams (ended at once if it sent none), and answers with a Readable (streamed back),
   * bytes, or nothing. Throwing, rejecting or a failing answer stream fail the peer's stream with
   * `RemoteError`.
   */
  onStream?: StreamHandler
  /**
   * Ring bytes per direction, a power of two from 4096 to 1 GiB. Default 1 MiB. Used by the side
   * that creates the channel; the other side uses what was created.
   */
  capacity?: number
  /**
   * Bytes accepted by `send`/`request` but not yet in the ring before they refuse. Default
   * 20,000,000. An empty queue always accepts one message, whatever its size.
   */
  maxQueueBytes?: number
  /** Largest message sent or accepted. Default 256 MiB; at most 4 GiB - 1. */
  maxMessageBytes?: number
  /** Default timeout of `request` and `requestSync`, in ms. Default 30,000. */
  timeoutMs?: number
  /**
   * After something arrived from the peer, or a request went out, this side's JS thread keeps
   * polling the rings for this many microseconds before it sleeps and waits to be woken: an
   * answer or message that comes meanwhile costs no wake-up at all. It polls between turns of the
   * event loop, busy-waiting (at most 50 µs at a time) only while the loop has nothing else to
   * do. While traffic flows the thread is busy; once it stops, at most this much CPU time is
   * spent. Sending messages alone does not start it. `0`: never poll, always sleep (least CPU,
   * highest latency). Default 50, or 2000 in `latencyMode`.
   */
  spinMicros?: number
  /**
   * Latency mode: `spinMicros` defaults to 2000, so a side keeps polling for 2 ms after each
   * message and round trips stay at a few µs when both sides use it, at the price of a CPU core
   * kept busy per side while requests come more often than every 2 ms. Default `false`.
   */
  latencyMode?: boolean
  /**
   * Access mode of the segment if this side creates it. Default `0o600`: only processes of the
   * same user can open the channel. `0o660` or `0o666` widen it (Linux only).
   */
  mode?: number
}

/** Options of a single request. */
export interface RequestOptions {
  /** Milliseconds to wait for the answer. Default: the channel's `timeoutMs`. */
  timeoutMs?: number
  /**
   * Aborts the request: it rejects with an `AbortError` (`code` `'ABORT_ERR'`, `cause` the
   * signal's reason), at once and without sending if the signal is already aborted. The peer is
   * told, as after a timeout: its handler's `ctx.signal` aborts. `requestSync` looks at it only
   * before it starts (it throws the AbortError if the signal is aborted): a blocked thread sees
   * no abort.
   */
  signal?: AbortSignal
}

/** The options of a channel, checked, with their defaults filled in. */
export interface ResolvedOptions {
  onRequest: RequestHandler | undefined
  onStream: StreamHandler | undefined
  capacity: number
  maxQueueBytes: number
  maxMessageBytes: number
  timeoutMs: number
  spinMicros: number
  mode: number
}

const OPTION_KEYS = new Set([
  'onRequest',
  'onStream',
  'capacity',
  'maxQueueBytes',
  'maxMessageBytes',
  'timeoutMs',
  'spinMicros',
  'latencyMode',
  'mode',
])

/** Checks `options` (unknown keys, types, ranges) and fills in the defaults. */
export function resolveOptions(options: OpenOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw argType(`options must be an object, got ${describe(options)}`)
  }
  for (const k of Object.keys(options)) {
    if (!OPTION_KEYS.has(k)) {
      throw argValue(`unknown option ${JSON.stringify(k)}; expected one of ${[...OPTION_KEYS].join(', ')}`)
    }
  }
  const onRequest = checkFunction(options.onRequest, 'onRequest')
  const onStream = checkFunction(options.onStream, 'onStream')
  const capacity = checkInt(options.capacity ?? 1 << 20, 'capacity', 4096, 1 << 30)
  if ((capacity & (capacity - 1)) !== 0) throw argValue(`capacity must be a power of two, got ${capacity}`, true)
  const maxQueueBytes = checkInt(options.maxQueueBytes ?? 20_000_000, 'maxQueueBytes', 0, Number.MAX_SAFE_INTEGER)
  const maxMessageBytes = checkInt(options.maxMessageBytes ?? 256 * 1024 * 1024, 'maxMessageBytes', 1, 2 ** 32 - 1)
  const mode = checkInt(options.mode ?? 0o600, 'mode', 0, 0o777)
  const timeoutMs = checkTimeout(options.timeoutMs ?? 30_000, 'timeoutMs')
  if (options.latencyMode !== undefined && typeof options.latencyMode !== 'boolean') {
    throw argType(`latencyMode must be a boolean, got ${describe(options.latencyMode)}`)
  }
  const spinMicros = checkInt(options.spinMicros ?? (options.latencyMode ? 2000 : 50), 'spinMicros', 0, 1_000_000)
  return { onRequest, onStream, capacity, maxQueueBytes, maxMessageBytes, timeoutMs, spinMicros, mode }
}
