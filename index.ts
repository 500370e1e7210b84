/**
 * sharmipc: inter-process RPC and messaging over shared memory.
 *
 * Two processes on one machine call `open(name)` with the same name and talk: Promise-based
 * requests with timeouts, blocking requests, send-and-forget messages, and answers given later.
 * There is no server and no client: both sides run the same code.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'

import type * as Binding from './binding'
import { asError, checkTimeout, describe, EMPTY, isThenable } from './internal'

type NativeChannel = Binding.NativeChannel
const { NativeChannel } = loadBinding()

/**
 * Loads the native part through the generated loader: a `.node` file next to it (a build from
 * source) or this platform's package (`sharmipc-<platform>-<arch>[-<abi>]`). When nothing loads,
 * the error names the platform and each file and package that was tried, and why it failed.
 */
function loadBinding(): typeof Binding {
  try {
    return require('./binding')
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
    const err = new Error(
      `sharmipc: no native binary loads on ${process.platform} ${process.arch}${libc} (Node ${process.version}). ` +
        `Tried: ${tried.join('; ')}. Prebuilt packages exist for linux x64/arm64 (glibc and musl), ` +
        `darwin x64/arm64 and win32 x64; npm installs the one matching this platform as an optional ` +
        `dependency (not with --omit=optional, and not when node_modules was installed on another platform). ` +
        `Elsewhere, build from source: npm run build in a clone of the repository.`,
      { cause: e },
    ) as Error & { code: string }
    err.code = 'ERR_SHARM_NO_BINARY'
    throw err
  }
}

const KIND_REQUEST = 1
const KIND_RESPONSE = 2
const KIND_ERROR = 3
const KIND_MESSAGE = 4
const KIND_STREAM = 7

const SEND_QUEUED_FULL = 2
const LARGE = 0xffffffff
const MAX_NAME_BYTES = 128
const NAME_PATTERN = /^[A-Za-z0-9._-]+$/
/** Rounds of polling one wake-up may take before it yields to the event loop. */
const DRAIN_ROUNDS = 16
/** Words at the start of pollInto's meta array, before the per-message entries. */
const META_HEAD = 8
/** Messages one pollInto may deliver. */
const META_MESSAGES = 8192
/** Incoming payloads are copied into arenas of this size; a message is a view into one. */
const ARENA_BYTES = 256 * 1024
/** Larger payloads get a buffer of their own (the native side's limit: min(arena / 4, 64 KiB)). */
const ARENA_INLINE_MAX = 64 * 1024
/** Small messages are encoded into a send buffer of this size and go to the ring in batches. */
const STAGE_BYTES = 64 * 1024
/** Larger messages go straight to the native side (after what is in the send buffer). */
const STAGE_MAX_MESSAGE = 4096
/** Header of a message in the send buffer: length, kind | gen << 16, id low, id high (u32 LE). */
const STAGED_HEADER = 16
/** A gap between two spin turns longer than this (ms) means the event loop has other work. */
const BUSY_GAP_MS = 0.02
/** While answering a batch of requests, the answers go out every this many. */
const ANSWER_FLUSH_EVERY = 32
/** Longest busy-wait (µs) in one turn of the event loop. */
const SPIN_SLICE_MICROS = 50

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Base class of every error sharmipc raises; `code` is a stable `ERR_SHARM_*` string. */
export class SharmError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.code = code
    this.name = new.target.name
  }
}

/** No answer arrived within the request's timeout. Code `ERR_SHARM_TIMEOUT`. */
export class TimeoutError extends SharmError {
  constructor(message: string) {
    super('ERR_SHARM_TIMEOUT', message)
  }
}

/** The peer process left (closed or died) before answering. Code `ERR_SHARM_PEER_GONE`. */
export class PeerGoneError extends SharmError {
  constructor(message: string) {
    super('ERR_SHARM_PEER_GONE', message)
  }
}

/** The send queue is over `maxQueueBytes`; nothing was taken. Code `ERR_SHARM_QUEUE_FULL`. */
export class QueueFullError extends SharmError {
  constructor(message: string) {
    super('ERR_SHARM_QUEUE_FULL', message)
  }
}

/** The message is larger than `maxMessageBytes`. Code `ERR_SHARM_TOO_LARGE`. */
export class TooLargeError extends SharmError {
  constructor(message: string) {
    super('ERR_SHARM_TOO_LARGE', message)
  }
}

/** Two live processes already hold the channel. Code `ERR_SHARM_BUSY`. */
export class BusyError extends SharmError {
  constructor(message: string) {
    super('ERR_SHARM_BUSY', message)
  }
}

/**
 * The peer wrote something that is not valid sharmipc, or the segment has another layout or
 * protocol version (the message names both). Code `ERR_SHARM_PROTOCOL`.
 */
export class ProtocolError extends SharmError {
  constructor(message: string) {
    super('ERR_SHARM_PROTOCOL', message)
  }
}

/** The channel is closed. Code `ERR_SHARM_CLOSED`. */
export class ClosedError extends SharmError {
  constructor(message = 'channel is closed') {
    super('ERR_SHARM_CLOSED', message)
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

const ERROR_CLASSES: Record<string, new (m: string) => SharmError> = {
  ERR_SHARM_TIMEOUT: TimeoutError,
  ERR_SHARM_PEER_GONE: PeerGoneError,
  ERR_SHARM_QUEUE_FULL: QueueFullError,
  ERR_SHARM_TOO_LARGE: TooLargeError,
  ERR_SHARM_BUSY: BusyError,
  ERR_SHARM_PROTOCOL: ProtocolError,
  ERR_SHARM_CLOSED: ClosedError,
}

/** Turns an error thrown by the native layer (`ERR_SHARM_X: text`) into its class. */
function fromNative(e: unknown): Error {
  const message = e instanceof Error ? e.message : String(e)
  const m = /^(ERR_SHARM_[A-Z_]+): ([\s\S]*)$/.exec(message)
  if (!m) return e instanceof Error ? e : new Error(message)
  const [, code, text] = m
  if (code === 'ERR_SHARM_REMOTE') return new RemoteError(text.replace(/^the peer's handler failed: /, ''))
  if (code === 'ERR_SHARM_INVALID') return Object.assign(new TypeError(text), { code })
  const Cls = ERROR_CLASSES[code]
  return Cls ? new Cls(text) : new SharmError(code, text)
}

// ---------------------------------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------------------------------

function toBytes(data: unknown, what: string): Uint8Array {
  if (data instanceof Uint8Array) return data
  throw new TypeError(`${what} must be a Buffer or Uint8Array, got ${describe(data)}`)
}

function checkName(name: unknown): string {
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

function checkInt(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new TypeError(`${what} must be an integer, got ${describe(v)}`)
  }
  if (v < min || v > max) throw new RangeError(`${what} must be from ${min} to ${max}, got ${v}`)
  return v
}

/**
 * Native channels still open. A process that exits without closing them (its loop ran dry with
 * unref'd channels, or it called process.exit) detaches them on the way out, so the peer sees a
 * clean disconnect and the last side out still removes the segment.
 */
const openNatives = new Map<NativeChannel, () => void>()
let exitHookInstalled = false

/** `flush` writes out what the channel accepted but still holds in JS (its send buffer). */
function trackNative(native: NativeChannel, flush: () => void): void {
  openNatives.set(native, flush)
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const [n, flush] of openNatives) {
      try {
        flush()
      } catch {
        // The channel failed: close() below still detaches it.
      }
      n.close()
    }
    openNatives.clear()
  })
}

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

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
}

/** Counts in one direction, see {@link Channel.stats}. */
export interface DirectionStats {
  /** Send-and-forget messages. */
  messages: number
  requests: number
  /** Answers, error answers included. */
  answers: number
  /** Frames of streams (chunks, ends, credits, ...). */
  streamFrames: number
  /** Payload bytes of all of them. */
  bytes: number
}

/** What {@link Channel.stats} returns. */
export interface ChannelStats {
  sent: DirectionStats
  received: DirectionStats
  pendingRequests: number
  timeouts: number
  queueFullRejections: number
  errors: number
  remoteErrors: number
  wakeups: number
  spinHits: number
  batches: number
  largestBatch: number
  queuedBytes: number
}

/** Argument of the `'disconnect'` event. */
export interface DisconnectInfo {
  /** Messages that were in the ring, not confirmed as read by the peer, when it left. */
  unconfirmed: number
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

/** Passed to the request handler along with the request's data. */
export class RequestContext {
  /** Identifies the request for {@link Channel.answer}; unique within this channel. */
  readonly id: number
  #deferred = false
  /** @internal */
  constructor(id: number) {
    this.id = id
  }
  /**
   * Says that the handler will answer later with `channel.answer(ctx.id, data | error)`; what it
   * returns is then ignored. Returns the id.
   */
  answerLater(): number {
    this.#deferred = true
    return this.id
  }
  /** Did the handler call {@link RequestContext.answerLater}? */
  get deferred(): boolean {
    return this.#deferred
  }
}

interface PendingRequest {
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
  deadline: number
}

interface Awaiting {
  wireId: number
  gen: number
}

export interface Channel {
  on(event: 'message', listener: (data: Buffer) => void): this
  on(event: 'connect', listener: () => void): this
  on(event: 'disconnect', listener: (info: DisconnectInfo) => void): this
  on(event: 'error', listener: (err: Error) => void): this
  on(event: 'close', listener: () => void): this
  on(event: 'drain', listener: () => void): this
  once(event: 'message', listener: (data: Buffer) => void): this
  once(event: 'connect', listener: () => void): this
  once(event: 'disconnect', listener: (info: DisconnectInfo) => void): this
  once(event: 'error', listener: (err: Error) => void): this
  once(event: 'close', listener: () => void): this
  once(event: 'drain', listener: () => void): this
}

/**
 * One side of a named channel. Events:
 * - `'message'` `(data: Buffer)`: a send-and-forget message from the peer, in the order sent;
 * - `'connect'`: a peer attached; `'disconnect'` `(info)`: it left (closed or died);
 * - `'error'` `(err)`: something failed that belongs to no call (a protocol error from the peer
 *   closes the channel; an answer could not be queued). Without a listener it becomes a process
 *   warning, never an exception;
 * - `'close'`: the channel closed;
 * - `'drain'`: after `send` returned `false` (or a request was refused with `QueueFullError`), the
 *   queue is empty again.
 *
 * `data` passed to `'message'` and to handlers may be a view into a larger buffer shared by one
 * batch: copy it (`Buffer.from(data)`) to keep a small piece for long.
 */
export class Channel extends EventEmitter {
  /** The channel's name. */
  readonly name: string
  #native: NativeChannel | null
  #onRequest: RequestHandler | undefined
  #onStream: StreamHandler | undefined
  #streams = new StreamTable({
    side: () => this.#native?.side ?? 0,
    send: (id, type, bytes) => {
      const native = this.#native
      if (native === null) throw new ClosedError()
      return this.#submit(native, KIND_STREAM, id, type, bytes)
    },
    wantDrain: () => {
      this.#wantDrain = true
    },
    handler: () => this.#onStream,
  })
  #timeoutMs: number
  #pending = new Map<number, PendingRequest>()
  #awaiting = new Map<number, Awaiting>()
  #orphaned = new Set<number>()
  #nextId = 1
  #nextHandle = 1
  #connected = false
  #timer: NodeJS.Timeout | null = null
  #timerAt = Infinity
  #closing: Promise<void> | null = null
  #peerWaiters = new Set<{ resolve: () => void; reject: (e: Error) => void }>()
  #drainWaiters: Array<() => void> = []
  #pendingDisconnect: DisconnectInfo | null = null
  #referenced = true
  /** A send was refused for a full queue: emit 'drain' when the queue is empty again. */
  #wantDrain = false
  /** How long (ms) to keep polling after the last message; 0: never. */
  #spinMs: number
  #meta = new Uint32Array(META_HEAD + 4 * META_MESSAGES)
  #arena: Buffer = Buffer.allocUnsafeSlow(0)
  #arenaUsed = 0
  /** Send buffer: messages accepted in this tick, written to the ring together (#flushStage). */
  #stage = Buffer.allocUnsafeSlow(STAGE_BYTES)
  #stage32 = new Uint32Array(this.#stage.buffer, this.#stage.byteOffset, STAGE_BYTES / 4)
  #stageLen = 0
  #stagedBytes = 0
  #flushScheduled = false
  /** Bytes in the native queue as of the last native call (only native calls change it). */
  #nativeQueued = 0
  #maxQueueBytes: number
  #maxMessageBytes: number
  // Counters of stats().
  #sentMessages = 0
  #sentRequests = 0
  #sentAnswers = 0
  #sentBytes = 0
  #receivedMessages = 0
  #receivedRequests = 0
  #receivedAnswers = 0
  #receivedBytes = 0
  #sentStreamFrames = 0
  #receivedStreamFrames = 0
  #remoteErrors = 0
  #timeouts = 0
  #queueFullRejections = 0
  #errors = 0
  #wakeups = 0
  #spinHits = 0
  #batches = 0
  #largestBatch = 0
  /** Latency mode is polling (a spin turn is scheduled). */
  #hot = false
  #lastWork = 0
  /** Something was sent or delivered since the last spin turn. */
  #active = false
  /** When the last spin turn ended (ms, performance.now()). */
  #turnEnd = 0

  /** @internal Use {@link open}. */
  constructor(name: string, options: OpenOptions = {}) {
    super()
    this.name = checkName(name)
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object, got ${describe(options)}`)
    }
    for (const k of Object.keys(options)) {
      if (!OPTION_KEYS.has(k)) {
        throw new TypeError(`unknown option ${JSON.stringify(k)}; expected one of ${[...OPTION_KEYS].join(', ')}`)
      }
    }
    if (options.onRequest !== undefined && typeof options.onRequest !== 'function') {
      throw new TypeError(`onRequest must be a function, got ${describe(options.onRequest)}`)
    }
    if (options.onStream !== undefined && typeof options.onStream !== 'function') {
      throw new TypeError(`onStream must be a function, got ${describe(options.onStream)}`)
    }
    this.#onStream = options.onStream
    const capacity = checkInt(options.capacity ?? 1 << 20, 'capacity', 4096, 1 << 30)
    if ((capacity & (capacity - 1)) !== 0) throw new RangeError(`capacity must be a power of two, got ${capacity}`)
    const maxQueueBytes = checkInt(options.maxQueueBytes ?? 20_000_000, 'maxQueueBytes', 0, Number.MAX_SAFE_INTEGER)
    const maxMessageBytes = checkInt(options.maxMessageBytes ?? 256 * 1024 * 1024, 'maxMessageBytes', 1, 2 ** 32 - 1)
    const mode = checkInt(options.mode ?? 0o600, 'mode', 0, 0o777)
    this.#timeoutMs = checkTimeout(options.timeoutMs ?? 30_000, 'timeoutMs')
    this.#maxQueueBytes = maxQueueBytes
    this.#maxMessageBytes = maxMessageBytes
    if (options.latencyMode !== undefined && typeof options.latencyMode !== 'boolean') {
      throw new TypeError(`latencyMode must be a boolean, got ${describe(options.latencyMode)}`)
    }
    const spinMicros = checkInt(options.spinMicros ?? (options.latencyMode ? 2000 : 50), 'spinMicros', 0, 1_000_000)
    this.#spinMs = spinMicros / 1000
    this.#onRequest = options.onRequest
    try {
      this.#native = new NativeChannel(
        name,
        // The wake-up thread does not spin: the JS thread does (see #heat).
        { capacity, maxQueueBytes, maxMessageBytes, spinMicros: 0, mode },
        this.#onWake,
      )
    } catch (e) {
      throw fromNative(e)
    }
    trackNative(this.#native, () => this.#flushStage())
  }

  /** Is a peer attached? */
  get connected(): boolean {
    return this.#connected
  }

  /** Has `close()` been called? */
  get closed(): boolean {
    return this.#closing !== null
  }

  /** Ring bytes per direction (as created by whichever side came first). */
  get capacity(): number {
    return this.#live().capacity
  }

  /** Requests waiting for an answer. */
  get pendingRequests(): number {
    return this.#pending.size
  }

  /** Bytes accepted but not yet written into the ring. */
  get queuedBytes(): number {
    return this.#native === null ? 0 : this.#native.queuedBytes + this.#stagedBytes
  }

  /**
   * Counters since the channel was opened. `sent`/`received`: messages (send-and-forget),
   * requests, answers (error answers included) and payload bytes, counted when accepted by
   * `send`/`request`/an answer and when delivered here. `timeouts`: requests that timed out;
   * `queueFullRejections`: sends, requests and answers refused for a full queue; `errors`:
   * `'error'` events (or warnings) raised; `remoteErrors`: error answers received. `wakeups`:
   * times the native thread woke the event loop; `spinHits`: times polling found work without a
   * wake-up; `batches`: reads that delivered something, `largestBatch` the most messages in one.
   */
  stats(): ChannelStats {
    return {
      sent: {
        messages: this.#sentMessages,
        requests: this.#sentRequests,
        answers: this.#sentAnswers,
        streamFrames: this.#sentStreamFrames,
        bytes: this.#sentBytes,
      },
      received: {
        messages: this.#receivedMessages,
        requests: this.#receivedRequests,
        answers: this.#receivedAnswers,
        streamFrames: this.#receivedStreamFrames,
        bytes: this.#receivedBytes,
      },
      pendingRequests: this.#pending.size,
      timeouts: this.#timeouts,
      queueFullRejections: this.#queueFullRejections,
      errors: this.#errors,
      remoteErrors: this.#remoteErrors,
      wakeups: this.#wakeups,
      spinHits: this.#spinHits,
      batches: this.#batches,
      largestBatch: this.#largestBatch,
      queuedBytes: this.queuedBytes,
    }
  }

  /** OS name of the shared-memory segment (under /dev/shm on Linux). */
  get segmentName(): string {
    return this.#live().segmentName
  }

  #live(): NativeChannel {
    if (this.#closing !== null || this.#native === null) throw new ClosedError()
    return this.#native
  }

  /**
   * Sends `data` to the peer's `onRequest` and resolves with its answer. Rejects with
   * `TimeoutError`, `PeerGoneError` (the peer left first), `RemoteError` (its handler failed),
   * `QueueFullError`, `TooLargeError`, or `ClosedError` (closed while waiting). Throws at once,
   * without returning a promise, for bad arguments and on a channel already closed. A request made before a peer attached
   * waits in the queue (its timeout runs) and goes out when one does.
   */
  request(data: Buffer | Uint8Array, options?: RequestOptions): Promise<Buffer> {
    const native = this.#live()
    const bytes = toBytes(data, 'data')
    const timeoutMs = checkTimeout(options?.timeoutMs ?? this.#timeoutMs, 'timeoutMs')
    const id = this.#nextId++
    let r: number
    try {
      r = this.#submit(native, KIND_REQUEST, id, 0, bytes)
    } catch (e) {
      return Promise.reject(fromNative(e))
    }
    if (r === SEND_QUEUED_FULL) {
      this.#wantDrain = true
      return Promise.reject(this.#queueFull())
    }
    if (this.#spinMs > 0) this.#heat()
    return new Promise<Buffer>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs
      this.#pending.set(id, { resolve, reject, deadline })
      if (deadline < this.#timerAt) this.#armTimer(deadline)
    })
  }

  /**
   * Sends `data` and blocks this thread until the answer arrives (the original's synchronous
   * `RemoteRequest`). Throws the same errors as {@link Channel.request} rejects with. While it
   * blocks, this side answers nothing: if both sides call `requestSync` at each other at the same
   * time, both wait until their timeouts and throw `TimeoutError`; the channels keep working.
   */
  requestSync(data: Buffer | Uint8Array, options?: RequestOptions): Buffer {
    const native = this.#live()
    const bytes = toBytes(data, 'data')
    const timeoutMs = checkTimeout(options?.timeoutMs ?? this.#timeoutMs, 'timeoutMs')
    const id = this.#nextId++
    try {
      this.#flushStage()
      const answer = native.requestSync(id, bytes, timeoutMs)
      this.#sentRequests++
      this.#sentBytes += bytes.length
      this.#receivedAnswers++
      this.#receivedBytes += answer.length
      return answer
    } catch (e) {
      const err = fromNative(e)
      if (err instanceof TimeoutError) {
        err.message = `no answer to requestSync within ${timeoutMs} ms`
        this.#timeouts++
      } else if (err instanceof QueueFullError) this.#queueFullRejections++
      else if (err instanceof RemoteError) this.#remoteErrors++
      throw err
    } finally {
      // Messages that arrived while blocked were kept; deliver them.
      setImmediate(this.#drain)
    }
  }

  /**
   * Opens a stream to the peer's `onStream` handler with `data`, and `body` streamed after it if
   * given; returns the Readable of the peer's answer. Backpressure holds end to end: a side sends
   * only what the other has room for (256 KiB per direction), so a stream never fills the ring and
   * ordinary messages pass it. Destroying the answer stream tells the peer to stop; the peer's
   * failure, its leaving, or `close()` destroy it with `RemoteError`, `PeerGoneError` or
   * `ClosedError`; a failing `body` fails the stream on both sides.
   */
  requestStream(data: Buffer | Uint8Array, body?: Readable): Readable {
    this.#live()
    const bytes = toBytes(data, 'data')
    if (body !== undefined && !(body instanceof Readable)) {
      throw new TypeError(`body must be a stream.Readable, got ${describe(body)}`)
    }
    return this.#streams.open(bytes, body)
  }

  /** Streams open now (either side's). */
  get openStreams(): number {
    return this.#streams.size
  }

  /**
   * Sends `data` without waiting for an answer (delivered to the peer's `'message'` listeners, in
   * order). Returns `false`, taking nothing, when the queue is over `maxQueueBytes`; an accepted
   * message is never dropped silently.
   */
  send(data: Buffer | Uint8Array): boolean {
    const native = this.#live()
    const bytes = toBytes(data, 'data')
    let r: number
    try {
      r = this.#submit(native, KIND_MESSAGE, 0, 0, bytes)
    } catch (e) {
      throw fromNative(e)
    }
    // Sending alone is no reason to poll: nothing is expected back (what the peer sends wakes
    // this side as usual, and then it polls).
    if (r !== SEND_QUEUED_FULL) return true
    this.#wantDrain = true
    return false
  }

  /**
   * Answers a request whose handler called `ctx.answerLater()`: with data, or with an Error (the
   * peer's request rejects with `RemoteError` carrying its message). Returns `true` when the
   * answer went out, `false` when the asking process has left meanwhile. Throws a RangeError for
   * an id that is not waiting for an answer (unknown or already answered).
   */
  answer(id: number, result: Buffer | Uint8Array | Error): boolean {
    this.#live()
    if (!(result instanceof Error)) toBytes(result, 'answer')
    if (this.#orphaned.delete(id)) return false
    const a = this.#awaiting.get(id)
    if (a === undefined) throw new RangeError(`no request with id ${describe(id)} is waiting for an answer`)
    this.#reply(id, a, result, result instanceof Error, true)
    return true
  }

  /** Resolves when a peer is attached; rejects with `TimeoutError` after `timeoutMs` if given. */
  waitForPeer(timeoutMs?: number): Promise<void> {
    this.#live()
    if (timeoutMs !== undefined) checkTimeout(timeoutMs, 'timeoutMs')
    if (this.#connected) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const w = {
        resolve: () => {
          clearTimeout(timer)
          resolve()
        },
        reject: (e: Error) => {
          clearTimeout(timer)
          reject(e)
        },
      }
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.#peerWaiters.delete(w)
          reject(new TimeoutError(`no peer attached to channel ${JSON.stringify(this.name)} within ${timeoutMs} ms`))
        }, timeoutMs)
        if (!this.#referenced) timer.unref()
      }
      this.#peerWaiters.add(w)
    })
  }

  /** Keeps the process alive while the channel is open (the default), like a socket. */
  ref(): this {
    this.#live().ref()
    this.#referenced = true
    return this
  }

  /** Lets the process exit although the channel is open. */
  unref(): this {
    this.#live().unref()
    this.#referenced = false
    return this
  }

  /**
   * Closes the channel: pending requests reject with `ClosedError` and every later call throws
   * it. Messages already accepted go on into the ring while a peer is attached and takes them
   * (close gives up after 2 s without progress); any that could not go are reported by an
   * `'error'` event. The wake-up thread stops and, if the
   * peer is gone too, the segment is removed. Resolves when done; calling it again returns the
   * same promise.
   */
  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#shutdown(new ClosedError('channel was closed'))
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  async #shutdown(reason: Error): Promise<void> {
    this.#rejectAll(reason)
    const native = this.#native
    if (native === null) return
    try {
      this.#flushStage()
    } catch {
      // a broken channel: nothing more can go out
    }
    // Wait while the queue drains; give up after 2 s without progress (or when the peer leaves).
    let queued = native.queuedBytes
    let progressAt = performance.now()
    while (queued > 0 && this.#connected && performance.now() - progressAt < 2000) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50)
        this.#drainWaiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
      if (native.queuedBytes < queued) progressAt = performance.now()
      queued = native.queuedBytes
    }
    const undelivered = native.queuedBytes
    this.#closeNative()
    if (undelivered > 0) {
      this.#emitError(
        new PeerGoneError(`${undelivered} bytes of accepted messages were not delivered before the channel closed`),
      )
    }
    this.emit('close')
  }

  #closeNative(): void {
    const native = this.#native
    this.#native = null
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
    if (native) {
      openNatives.delete(native)
      native.close()
    }
    for (const w of this.#drainWaiters.splice(0)) w()
  }

  #rejectAll(reason: Error): void {
    const pending = [...this.#pending.values()]
    this.#pending.clear()
    for (const p of pending) p.reject(reason)
    for (const w of this.#peerWaiters) w.reject(reason)
    this.#peerWaiters.clear()
    this.#streams.abortAll(reason)
  }

  #queueFull(): QueueFullError {
    return new QueueFullError(`send queue is full: ${this.queuedBytes} bytes are waiting for the ring`)
  }

  /**
   * Emits an event without letting a throwing listener break delivery of the rest of the batch;
   * the listener's exception is rethrown on its own tick, as an uncaught exception.
   */
  #emitSafely(event: string, arg?: unknown): void {
    try {
      this.emit(event, arg)
    } catch (e) {
      process.nextTick(() => {
        throw e
      })
    }
  }

  #emitError(err: Error): void {
    this.#errors++
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else process.emitWarning(err)
  }

  /** A protocol error: fail everything, close at once. */
  #fail(err: Error): void {
    this.#stageLen = 0
    this.#stagedBytes = 0
    if (this.#closing === null) this.#closing = Promise.resolve()
    this.#rejectAll(err)
    this.#closeNative()
    this.#emitError(err)
    this.emit('close')
  }

  // --- timeouts: one timer for all requests, armed for the earliest deadline -----------------

  #armTimer(at: number): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timerAt = at
    this.#timer = setTimeout(this.#sweep, Math.max(0, at - performance.now()) + 1)
    this.#timer.unref()
  }

  #sweep = (): void => {
    this.#timer = null
    this.#timerAt = Infinity
    const now = performance.now()
    let next = Infinity
    for (const [id, p] of this.#pending) {
      if (p.deadline <= now) {
        this.#pending.delete(id)
        this.#native?.cancel(id)
        this.#timeouts++
        p.reject(new TimeoutError(`no answer to request ${id} within its timeout`))
      } else if (p.deadline < next) {
        next = p.deadline
      }
    }
    if (next !== Infinity && this.#native !== null) this.#armTimer(next)
  }

  // --- sending: small messages are batched per tick -----------------------------------------

  /**
   * Sends one message, with the contract of the native `send`: 0 or 1 when taken, 2
   * (`SEND_QUEUED_FULL`) when the queue is over `maxQueueBytes`; throws native errors. Small
   * messages are encoded into the send buffer, which goes to the ring at the end of the tick (or
   * when full); larger ones go straight to the native side, after what is in the send buffer.
   */
  #submit(native: NativeChannel, kind: number, id: number, gen: number, bytes: Uint8Array): number {
    const r = this.#submitOne(native, kind, id, gen, bytes)
    if (r === SEND_QUEUED_FULL) this.#queueFullRejections++
    else {
      if (kind === KIND_MESSAGE) this.#sentMessages++
      else if (kind === KIND_STREAM) this.#sentStreamFrames++
      else if (kind === KIND_REQUEST) this.#sentRequests++
      else this.#sentAnswers++
      this.#sentBytes += bytes.length
    }
    return r
  }

  #submitOne(native: NativeChannel, kind: number, id: number, gen: number, bytes: Uint8Array): number {
    const len = bytes.length
    if (len > STAGE_MAX_MESSAGE || len > this.#maxMessageBytes) {
      this.#flushStage()
      const r = native.send(kind, id, gen, bytes)
      this.#nativeQueued = native.queuedBytes
      // Bytes wait for ring space, which the peer frees soon: poll for it rather than sleep.
      if (this.#nativeQueued > 0 && this.#spinMs > 0) this.#heat()
      return r
    }
    // The queue limit counts what waits here and natively. An empty queue takes any message.
    let queued = this.#nativeQueued + this.#stagedBytes
    if (queued > 0 && queued + len > this.#maxQueueBytes) {
      if (this.#stagedBytes === 0) return SEND_QUEUED_FULL
      this.#flushStage() // what is staged may fit the ring: look again with the native count
      queued = this.#nativeQueued
      if (queued > 0 && queued + len > this.#maxQueueBytes) return SEND_QUEUED_FULL
    }
    const need = STAGED_HEADER + ((len + 7) & ~7)
    if (this.#stageLen + need > STAGE_BYTES) this.#flushStage()
    const o = this.#stageLen
    const w = o >>> 2
    const s32 = this.#stage32
    s32[w] = len
    s32[w + 1] = kind | (gen << 16)
    s32[w + 2] = id >>> 0
    s32[w + 3] = (id / 0x1_0000_0000) >>> 0
    const stage = this.#stage
    if (len <= 16) for (let i = 0; i < len; i++) stage[o + STAGED_HEADER + i] = bytes[i]
    else stage.set(bytes, o + STAGED_HEADER)
    this.#stageLen = o + need
    this.#stagedBytes += len
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      process.nextTick(this.#flushTick)
    }
    return 0
  }

  /** Writes the send buffer to the ring (what does not fit goes to the native queue). */
  #flushStage(): void {
    const len = this.#stageLen
    if (len === 0) return
    this.#stageLen = 0
    this.#stagedBytes = 0
    const native = this.#native
    if (native === null) return
    this.#nativeQueued = native.sendStaged(this.#stage, len)
    if (this.#nativeQueued > 0 && this.#spinMs > 0) this.#heat()
  }

  #flushTick = (): void => {
    this.#flushScheduled = false
    this.#flushOrFail()
  }

  /** Flushes the send buffer; on failure (a broken channel) fails the channel and says false. */
  #flushOrFail(): boolean {
    try {
      this.#flushStage()
      return true
    } catch (e) {
      this.#fail(fromNative(e))
      return false
    }
  }

  // --- polling between turns of the event loop while traffic flows (spinMicros) --------------

  /** Runs `fn` in the next turn of the event loop; an unref'd channel does not keep it alive. */
  #later(fn: () => void): void {
    const im = setImmediate(fn)
    if (!this.#referenced) im.unref()
  }

  #heat(): void {
    this.#active = true
    if (this.#hot || this.#native === null) return
    this.#hot = true
    this.#lastWork = this.#turnEnd = performance.now()
    this.#native.setDriving(true)
    this.#later(this.#spinTurn)
  }

  #spinTurn = (): void => {
    const native = this.#native
    if (native === null) {
      this.#hot = false
      return
    }
    const t = performance.now()
    if (this.#active) {
      this.#active = false
      this.#lastWork = t
    }
    // Busy-wait only while the event loop has nothing else to do. When other work ran since the
    // last turn (a sending loop, other I/O), look once and let it go on.
    const othersBusy = t - this.#turnEnd > BUSY_GAP_MS
    const left = this.#spinMs - (t - this.#lastWork)
    let work = true
    try {
      work = native.spin(othersBusy ? 0 : Math.max(0, Math.min(SPIN_SLICE_MICROS, Math.ceil(left * 1000))))
    } catch {
      // closed or broken: the drain below reports it
    }
    if (work) {
      this.#spinHits++
      this.#active = true
      this.#drain()
    } else if (left <= 0) {
      // Quiet for spinMicros: hand over to the wake-up thread, which looks at once.
      this.#hot = false
      native.setDriving(false)
      return
    }
    if (this.#native === null) {
      this.#hot = false
      return
    }
    this.#turnEnd = performance.now()
    this.#later(this.#spinTurn)
  }

  // --- delivery ---------------------------------------------------------------------------

  /** Called by the wake-up thread when there is something to read. */
  #onWake = (): void => {
    this.#wakeups++
    this.#drain()
  }

  /** Called by the wake-up thread (and after requestSync): takes everything that arrived. */
  #drain = (): void => {
    if (!this.#flushOrFail()) return
    for (let round = 0; round < DRAIN_ROUNDS && this.#native !== null; round++) {
      const meta = this.#meta
      if (this.#arena.length - this.#arenaUsed < ARENA_INLINE_MAX) {
        this.#arena = Buffer.allocUnsafeSlow(ARENA_BYTES)
        this.#arenaUsed = 0
      }
      const arena = this.#arena
      const start = this.#arenaUsed
      let count: number
      try {
        count = this.#native.pollInto(meta, arena, start)
      } catch (e) {
        this.#fail(fromNative(e))
        return
      }
      this.#arenaUsed = meta[5]
      this.#nativeQueued = meta[6] + meta[7] * 0x1_0000_0000
      const more = meta[4] !== 0
      if (meta[0] & 1) this.#pendingDisconnect = { unconfirmed: meta[2] + meta[3] * 0x1_0000_0000 }
      if (meta[0] & 2) {
        // A new peer: the old one's leaving comes first.
        if (this.#pendingDisconnect) this.#onDisconnect(this.#pendingDisconnect)
        this.#onConnect()
      }
      let settled = 0
      if (count > 0) {
        this.#batches++
        if (count > this.#largestBatch) this.#largestBatch = count
        if (this.#spinMs > 0) this.#heat()
        settled = this.#deliver(meta, count, arena, start)
      }
      // A disconnect is applied once everything the peer wrote before leaving was read, so its
      // last answers still resolve their requests.
      if (this.#pendingDisconnect && !more) this.#onDisconnect(this.#pendingDisconnect)
      if (!more) break
      if (settled > 0) {
        // Let the code waiting for these answers run (and send) before reading on.
        this.#later(this.#drain)
        break
      }
    }
    if (this.#wantDrain && this.#native !== null && this.#nativeQueued + this.#stagedBytes === 0) {
      this.#wantDrain = false
      this.#streams.resume()
      this.#emitSafely('drain')
    }
    for (const w of this.#drainWaiters.splice(0)) w()
  }

  /**
   * Delivers `count` messages described in `meta` (after its head) whose payloads lie in `arena`
   * from `offset` on. (Handlers never poll synchronously, so `meta` stays as it is meanwhile.)
   * Returns how many requests of ours it settled.
   */
  #deliver(meta: Uint32Array, count: number, arena: Buffer, offset: number): number {
    const m = meta
    const stop = META_HEAD + count * 4
    let settled = 0
    let handled = 0
    for (let i = META_HEAD; i < stop; i += 4) {
      const kind = m[i] & 0xff
      const gen = m[i] >>> 16
      const id = m[i + 1] + m[i + 2] * 0x1_0000_0000
      const len = m[i + 3]
      let payload: Buffer
      if (len === LARGE) {
        if (this.#native === null) return settled // a handler closed the channel
        payload = this.#native.takeLarge()
      } else {
        payload = Buffer.from(arena.buffer, arena.byteOffset + offset, len)
        offset += len
      }
      this.#receivedBytes += payload.length
      switch (kind) {
        case KIND_MESSAGE:
          this.#receivedMessages++
          this.#emitSafely('message', payload)
          break
        case KIND_STREAM:
          this.#receivedStreamFrames++
          this.#streams.onFrame(id, gen, payload)
          break
        case KIND_REQUEST:
          this.#receivedRequests++
          this.#onPeerRequest(id, gen, payload)
          // Stream the answers: the asker can go on with the first ones meanwhile.
          if (++handled % ANSWER_FLUSH_EVERY === 0 && !this.#flushOrFail()) return settled
          break
        case KIND_RESPONSE:
        case KIND_ERROR: {
          this.#receivedAnswers++
          if (kind === KIND_ERROR) this.#remoteErrors++
          const p = this.#pending.get(id)
          if (p === undefined) break // timed out or cancelled: a late answer is dropped
          this.#pending.delete(id)
          settled++
          if (kind === KIND_RESPONSE) p.resolve(payload)
          else p.reject(new RemoteError(payload.toString('utf8')))
          break
        }
      }
    }
    return settled
  }

  #onPeerRequest(wireId: number, gen: number, data: Buffer): void {
    const handle = this.#nextHandle++
    const a: Awaiting = { wireId, gen }
    this.#awaiting.set(handle, a)
    const handler = this.#onRequest
    if (handler === undefined) {
      this.#reply(handle, a, new Error('the peer has no onRequest handler'), true, false)
      return
    }
    const ctx = new RequestContext(handle)
    let result: Answer | Promise<Answer>
    try {
      result = handler(data, ctx)
    } catch (e) {
      this.#reply(handle, a, e, true, false)
      return
    }
    if (ctx.deferred) return
    if (isThenable(result)) {
      ;(result as Promise<Answer>).then(
        (v) => ctx.deferred || this.#reply(handle, a, v, false, false),
        (e) => this.#reply(handle, a, e, true, false),
      )
    } else {
      this.#reply(handle, a, result as Answer, false, false)
    }
  }

  /**
   * Sends the answer to request `handle`: `failed` says `result` was thrown/rejected (or is the
   * Error given to `answer()`); `explicit`: called by `answer()`, so errors throw.
   */
  #reply(handle: number, a: Awaiting, result: unknown, failed: boolean, explicit: boolean): void {
    if (this.#awaiting.get(handle) !== a) {
      this.#orphaned.delete(handle) // its asker left: drop the answer
      return
    }
    this.#awaiting.delete(handle)
    const native = this.#native
    if (native === null) return
    let kind = KIND_RESPONSE
    let bytes: Uint8Array
    if (failed) {
      kind = KIND_ERROR
      bytes = Buffer.from(result instanceof Error ? result.message : String(result))
    } else if (result === undefined || result === null) {
      bytes = Buffer.alloc(0)
    } else if (result instanceof Uint8Array) {
      bytes = result
    } else {
      kind = KIND_ERROR
      bytes = Buffer.from(`handler answered with ${describe(result)}, expected a Buffer or Uint8Array`)
    }
    let r: number
    try {
      r = this.#submit(native, kind, a.wireId, a.gen, bytes)
    } catch (e) {
      const err = fromNative(e)
      if (err instanceof TooLargeError) {
        r = this.#submit(native, KIND_ERROR, a.wireId, a.gen, Buffer.from(`answer not sent: ${err.message}`))
      } else {
        if (explicit) throw err
        this.#emitError(err)
        return
      }
    }
    if (r === SEND_QUEUED_FULL) {
      const err = new QueueFullError(`answer to a request could not be queued: ${this.#queueFull().message}`)
      if (explicit) throw err
      this.#emitError(err)
    }
  }

  #onDisconnect(info: DisconnectInfo): void {
    this.#pendingDisconnect = null
    if (!this.#connected) return
    this.#connected = false
    for (const handle of this.#awaiting.keys()) this.#orphaned.add(handle)
    this.#awaiting.clear()
    const gone = new PeerGoneError('the peer left the channel before answering')
    const pending = [...this.#pending]
    this.#pending.clear()
    for (const [id, p] of pending) {
      // A request still queued would otherwise reach the next peer and run there although it
      // was reported as failed here.
      this.#native?.cancel(id)
      p.reject(gone)
    }
    this.#streams.abortAll(new PeerGoneError('the peer left the channel during the stream'))
    this.#emitSafely('disconnect', info)
  }

  #onConnect(): void {
    if (this.#connected) return
    this.#connected = true
    for (const w of this.#peerWaiters) w.resolve()
    this.#peerWaiters.clear()
    this.#emitSafely('connect')
  }
}

// ---------------------------------------------------------------------------------------------
// Streams: request with a streamed body and/or a streamed answer, over stream frames
// ---------------------------------------------------------------------------------------------

// Frame types, carried in the record's generation field; the record's id is the stream id.
const F_OPEN_BODY = 1 // opener → peer: open, a body follows; payload: the request data
const F_OPEN = 2 // opener → peer: open, no body; payload: the request data
const F_DATA = 3 // a chunk, in the sender's direction
const F_END = 4 // no more chunks in the sender's direction
const F_ERROR = 5 // the stream failed, both directions end; payload: the message
const F_CANCEL = 6 // the sender stopped reading: stop sending to it
const F_CREDIT = 7 // the sender consumed this many more bytes (payload: u32 LE)

/** Bytes a stream direction may have on the way or unread; what keeps a stream from filling the ring. */
const STREAM_WINDOW = 256 * 1024
/** Largest chunk in one frame. */
const STREAM_FRAME = 64 * 1024

/** Answers a stream request: may return a Readable (streamed back), bytes, or nothing. */
export type StreamHandler = (
  data: Buffer,
  body: Readable,
) => Readable | Buffer | Uint8Array | undefined | void | Promise<Readable | Buffer | Uint8Array | undefined | void>

/** What the stream table needs from its channel. */
interface StreamHost {
  /** This side's number (0 or 1): the low bit of the ids of streams it opens. */
  side(): number
  /** Sends a frame; the native send contract (2: queue full). Throws native errors. */
  send(id: number, type: number, bytes: Uint8Array): number
  /** Asks for a call of `resume()` once the queue has room again. */
  wantDrain(): void
  handler(): StreamHandler | undefined
}

/** One stream, seen from one side. */
class StreamState {
  /** What this side receives (the answer for the opener, the body for the other side). */
  incoming: Readable
  /** What this side sends, once known. */
  source: Readable | null = null
  /** Bytes this side may still send. */
  credit = STREAM_WINDOW
  /** Chunks read from `source` that wait for credit or queue room. */
  backlog: Buffer[] = []
  sourceEnded = false
  outDone = false
  inDone = false
  received = 0
  granted = 0
  constructor(
    readonly id: number,
    readonly table: StreamTable,
  ) {
    this.incoming = new Readable({
      highWaterMark: STREAM_WINDOW,
      read: () => this.grant(),
      destroy: (err, cb) => {
        // Destroyed here before the peer ended it: tell the peer to stop sending.
        if (!this.inDone) {
          this.inDone = true
          this.table.frame(this.id, F_CANCEL)
        }
        this.table.settle(this)
        cb(err)
      },
    })
    this.incoming.once('end', () => {
      this.inDone = true
      this.table.settle(this)
    })
  }

  /**
   * Gives the peer credit for everything received so far, at least `min` bytes of it: called
   * while `incoming` has room below its high-water mark (after a push that said so, or when the
   * reader asks for more), so what is buffered here stays within about two windows.
   */
  grant(min = 1): void {
    const more = this.received - this.granted
    if (more < min || this.inDone) return
    const b = Buffer.allocUnsafe(4)
    b.writeUInt32LE(more, 0)
    if (this.table.frame(this.id, F_CREDIT, b)) this.granted = this.received
  }

  /** Starts sending `source` (a Readable) or `bytes`. */
  sendFrom(source: Readable | Uint8Array | undefined): void {
    if (source === undefined) {
      this.sourceEnded = true
    } else if (source instanceof Uint8Array) {
      for (let o = 0; o < source.length; o += STREAM_FRAME) {
        this.backlog.push(Buffer.from(source.buffer, source.byteOffset + o, Math.min(STREAM_FRAME, source.length - o)))
      }
      this.sourceEnded = true
    } else {
      this.source = source
      source.on('data', (chunk: unknown) => {
        if (typeof chunk === 'string') chunk = Buffer.from(chunk)
        if (!(chunk instanceof Uint8Array)) {
          this.fail(new TypeError(`stream chunks must be Buffers or Uint8Arrays, got ${describe(chunk)}`))
          return
        }
        const c = chunk as Uint8Array
        for (let o = 0; o < c.length; o += STREAM_FRAME) {
          this.backlog.push(Buffer.from(c.buffer, c.byteOffset + o, Math.min(STREAM_FRAME, c.length - o)))
        }
        this.pump()
      })
      source.once('end', () => {
        this.sourceEnded = true
        this.pump()
      })
      source.once('error', (e) => this.fail(e))
      source.once('close', () => {
        if (!this.sourceEnded && !this.outDone) this.fail(new Error('the stream being sent was destroyed'))
      })
    }
    this.pump()
  }

  /** Sends what credit and queue room allow; pauses the source when they run out. */
  pump(): void {
    while (!this.outDone && this.backlog.length > 0) {
      const chunk = this.backlog[0]
      if (this.credit <= 0) break
      const part = chunk.length <= this.credit ? chunk : chunk.subarray(0, this.credit)
      if (!this.table.frame(this.id, F_DATA, part)) break
      this.credit -= part.length
      if (part === chunk) this.backlog.shift()
      else this.backlog[0] = chunk.subarray(part.length)
    }
    if (this.outDone) return
    if (this.backlog.length === 0 && this.sourceEnded) {
      if (this.table.frame(this.id, F_END)) {
        this.outDone = true
        this.table.settle(this)
      }
      return
    }
    // Hold the source while chunks wait; let it flow again once they went.
    if (this.source !== null) {
      if (this.backlog.length > 0) this.source.pause()
      else this.source.resume()
    }
  }

  /**
   * This side failed the stream: the peer hears why, both directions end here. `local`: also
   * destroy `incoming` with the error (not when the failure is the handler's own, whose body
   * may have no 'error' listener: the handler knows already).
   */
  fail(err: Error, local = true): void {
    if (!this.outDone || !this.inDone) this.table.frame(this.id, F_ERROR, Buffer.from(err.message))
    this.abort(local ? err : undefined)
  }

  /** Ends both directions here, `incoming` with `err` if given (nothing is sent). */
  abort(err?: Error): void {
    this.outDone = true
    this.backlog = []
    if (this.source !== null && !this.source.destroyed) this.source.destroy()
    if (!this.inDone) {
      this.inDone = true
      this.incoming.destroy(err)
    }
    this.table.settle(this)
  }

  /** A frame from the peer. */
  onFrame(type: number, payload: Buffer): void {
    switch (type) {
      case F_DATA:
        if (this.inDone) return // cancelled here; the peer has not seen it yet
        this.received += payload.length
        // Room left below the high-water mark: credit now (in quarter windows); otherwise when
        // the reader asks for more.
        if (this.incoming.push(payload)) this.grant(STREAM_WINDOW / 4)
        break
      case F_END:
        if (this.inDone) return
        this.incoming.push(null)
        break
      case F_CREDIT:
        if (payload.length === 4) this.credit += payload.readUInt32LE(0)
        this.pump()
        break
      case F_CANCEL:
        // The peer stops reading what this side sends.
        this.outDone = true
        this.backlog = []
        if (this.source !== null && !this.source.destroyed) this.source.destroy()
        this.table.settle(this)
        break
      case F_ERROR:
        this.abort(new RemoteError(payload.toString('utf8')))
        break
    }
  }
}

/** The streams of one channel. */
class StreamTable {
  #streams = new Map<number, StreamState>()
  #next = 0
  #blocked = new Set<StreamState>()
  constructor(readonly host: StreamHost) {}

  get size(): number {
    return this.#streams.size
  }

  /** Opens a stream: returns the Readable of the answer. */
  open(data: Uint8Array, body: Readable | undefined): Readable {
    const id = this.#next++ * 2 + this.host.side()
    const st = new StreamState(id, this)
    this.#streams.set(id, st)
    let r: number
    try {
      r = this.host.send(id, body === undefined ? F_OPEN : F_OPEN_BODY, data)
    } catch (e) {
      st.abort(fromNative(e))
      return st.incoming
    }
    if (r === SEND_QUEUED_FULL) {
      st.abort(new QueueFullError('stream not opened: the send queue is full'))
      return st.incoming
    }
    if (body === undefined) {
      st.outDone = true // F_OPEN said there is no body
      this.settle(st)
    } else {
      st.sendFrom(body)
    }
    return st.incoming
  }

  /** A frame from the peer. */
  onFrame(id: number, type: number, payload: Buffer): void {
    const st = this.#streams.get(id)
    if (st !== undefined) {
      st.onFrame(type, payload)
      return
    }
    if ((type !== F_OPEN && type !== F_OPEN_BODY) || (id & 1) === this.host.side()) return // ended here
    const peerStream = new StreamState(id, this)
    this.#streams.set(id, peerStream)
    if (type === F_OPEN) {
      peerStream.inDone = true
      peerStream.incoming.push(null)
    }
    const handler = this.host.handler()
    if (handler === undefined) {
      peerStream.fail(new Error('the peer has no onStream handler'), false)
      return
    }
    // The request data is a view into a shared arena: copy it for the handler to keep.
    const data = Buffer.from(payload)
    let answer: ReturnType<StreamHandler>
    try {
      answer = handler(data, peerStream.incoming)
    } catch (e) {
      peerStream.fail(asError(e), false)
      return
    }
    Promise.resolve(answer).then(
      (a) => {
        if (peerStream.outDone) return
        if (a === undefined || a === null || a instanceof Uint8Array || a instanceof Readable) {
          peerStream.sendFrom(a ?? undefined)
        } else {
          peerStream.fail(
            new TypeError(`onStream answered with ${describe(a)}, expected a Readable, bytes or nothing`),
            false,
          )
        }
      },
      (e) => peerStream.fail(asError(e), false),
    )
  }

  /** Sends a frame; false when the queue is full (the stream is resumed once it has room). */
  frame(id: number, type: number, bytes: Uint8Array = EMPTY): boolean {
    const st = this.#streams.get(id)
    let r: number
    try {
      r = this.host.send(id, type, bytes)
    } catch (e) {
      if (st !== undefined) st.abort(fromNative(e))
      return false
    }
    if (r !== SEND_QUEUED_FULL) return true
    if (st !== undefined) {
      this.#blocked.add(st)
      this.host.wantDrain()
    }
    return false
  }

  /** The queue has room again. */
  resume(): void {
    const blocked = [...this.#blocked]
    this.#blocked.clear()
    for (const st of blocked) {
      st.grant()
      st.pump()
    }
  }

  /** Forgets a stream once both directions are done. */
  settle(st: StreamState): void {
    if (st.inDone && st.outDone) {
      this.#streams.delete(st.id)
      this.#blocked.delete(st)
    }
  }

  /** Ends every stream with `err` (the peer left, or the channel closed). */
  abortAll(err: Error): void {
    for (const st of [...this.#streams.values()]) st.abort(err)
    this.#streams.clear()
    this.#blocked.clear()
  }
}

/**
 * Opens channel `name` (1 to 128 bytes of A-Z a-z 0-9 . _ -) and attaches at once: the first
 * process creates it, the second joins it, a third gets `BusyError`. Throws `TypeError`/
 * `RangeError` for bad arguments and `ProtocolError` when the name holds something else.
 *
 * @example
 * const ch = open('orders', { onRequest: (data) => Buffer.from('ok') })
 * await ch.waitForPeer()
 * const answer = await ch.request(Buffer.from('hello'), { timeoutMs: 5000 })
 */
export function open(name: string, options?: OpenOptions): Channel {
  return new Channel(name, options)
}
