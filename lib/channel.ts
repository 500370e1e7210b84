/**
 * One side of a named channel: {@link open} attaches to it, {@link Channel} is what a user holds.
 * The class ties the parts together; each part lives in a file of its own: the way out in
 * `internal/send-buffer.ts`, the way in in `internal/receive.ts`, requests of ours in
 * `internal/pending.ts`, the peer's requests in `internal/answering.ts`, the polling strategy in
 * `internal/polling.ts`, streams in `streams.ts`.
 *
 * @packageDocumentation
 */
import { EventEmitter, on as onEvent, once as onceEvent } from 'node:events'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { debuglog } from 'node:util'

import {
  aborted,
  ClosedError,
  fromNative,
  PeerGoneError,
  QueueFullError,
  RemoteError,
  SharmError,
  TimeoutError,
  toSharmError,
} from './errors'
import { resolveOptions, type OpenOptions, type RequestHandler, type RequestOptions } from './options'
import { StreamTable, type StreamHandler } from './streams'
import { Answering } from './internal/answering'
import { native as binding, type NativeChannel, type NativeLobby, type PeerChange } from './internal/binding'
import { trackNative, untrackNative } from './internal/exit-hook'
import { PendingRequests } from './internal/pending'
import { Poller } from './internal/polling'
import { MessageIterator } from './internal/message-iterator'
import { Receiver } from './internal/receive'
import { SendBuffer } from './internal/send-buffer'
import { Counters, type ChannelStats } from './internal/stats'
import {
  argType,
  checkInt,
  checkName,
  checkSignal,
  checkTimeout,
  describe,
  toBytes,
  type Payload,
} from './internal/validate'

const { KIND_MESSAGE, KIND_REQUEST, KIND_STREAM, SEND_QUEUE_FULL } = binding

const debugLog = debuglog('sharmipc')
/** `NODE_DEBUG=sharmipc` was set when the module loaded: looked up once, so logging costs nothing when off. */
const DEBUG = debugLog.enabled

/**
 * Argument of the `'disconnect'` event: the peer that left, and the send-and-forget messages
 * accepted for it that it did not get, handed back in the order sent.
 */
export interface DisconnectInfo {
  /** The departed peer's generation (the same as in its `'connect'`). */
  generation: number
  /** Messages it surely did not get: never taken out of the ring, or still in the queue. */
  undelivered: Buffer[]
  /**
   * Messages its process had taken out of the ring for delivery when it stopped (at most the one
   * batch it was delivering): they may or may not have reached its listeners.
   */
  inDoubt: Buffer[]
  /**
   * Every message not confirmed as delivered: `undelivered.length + inDoubt.length`, plus
   * messages over a quarter of the ring that the peer had taken in part (their bytes are gone).
   */
  unconfirmed: number
}

/** Argument of the `'connect'` event. */
export interface ConnectInfo {
  /** The peer's generation: bumped each time a process takes the peer's side. */
  generation: number
  /**
   * The peer's process id; 0 for a peer whose whole stay (attach, sends, death) fell between two
   * looks of this side at its slot (this side's thread was busy meanwhile): its slot was freed,
   * with its pid, before this side saw it. Its messages and its `'disconnect'` still come.
   */
  pid: number
}

/**
 * The events of a {@link Channel} and their arguments, for Node's typed `EventEmitter`: `on`,
 * `once`, `addListener`, `emit` and the rest are typed by it, and so are {@link Channel.once} and
 * {@link Channel.on}, the typed `events.once(ch, ...)` and `events.on(ch, ...)`.
 */
export interface ChannelEvents {
  message: [data: Buffer]
  connect: [info: ConnectInfo]
  disconnect: [info: DisconnectInfo]
  error: [err: SharmError]
  close: []
  drain: []
}

/** Options of {@link Channel.messages}. */
export interface MessagesOptions {
  /** Ends the iteration: the loop throws an `AbortError` (`code: 'ABORT_ERR'`), as `events.on` does. */
  signal?: AbortSignal
  /**
   * Messages the iterator holds unread before this side stops reading the ring (default 64).
   * One read may bring more than that.
   */
  highWaterMark?: number
}

/**
 * One side of a named channel. Events:
 * - `'message'` `(data: Buffer)`: a send-and-forget message from the peer, in the order sent;
 * - `'connect'` `({ generation, pid })`: a peer attached; `'disconnect'` `(info)`: it left (closed,
 *   died, or was found a zombie), with the messages it did not get (see {@link DisconnectInfo}).
 *   They come in order, one `'disconnect'` after each `'connect'`, and after every message that
 *   peer sent;
 * - `'error'` `(err: SharmError)`: something failed that belongs to no call (a protocol error from the peer
 *   closes the channel; an answer could not be queued). Without a listener it becomes a process
 *   warning, never an exception;
 * - `'close'`: the channel closed;
 * - `'drain'`: after `send` returned `false` (or a request was refused with `QueueFullError`), the
 *   queue is empty again.
 *
 * The events are typed ({@link ChannelEvents}): `on`, `once`, `addListener`, `emit` and the rest
 * know each event's arguments. {@link Channel.messages} iterates the messages with backpressure.
 *
 * `data` passed to `'message'` and to handlers may be a view into a larger buffer shared by one
 * batch: copy it (`Buffer.from(data)`) to keep a small piece for long.
 */
export class Channel extends EventEmitter<ChannelEvents> {
  /**
   * `events.once(ch, event, options)` with its result typed by {@link ChannelEvents}:
   * `const [info] = await Channel.once(ch, 'connect')` gives a {@link ConnectInfo}. (`events.once`
   * is the same function, but `@types/node` types its result `any[]`, and a package cannot retype
   * it.) Rejects if `'error'` comes first, and with an `AbortError` on `signal`.
   */
  static override once<K extends keyof ChannelEvents>(
    emitter: Channel,
    event: K,
    options?: { signal?: AbortSignal },
  ): Promise<ChannelEvents[K]>
  /** Any other emitter or event target, as `events.once`. */
  static override once<E extends EventEmitter | EventTarget>(
    emitter: E extends Channel ? never : E,
    event: string | symbol,
    options?: object,
  ): Promise<any[]>
  static override once(emitter: any, event: any, options?: any): Promise<any[]> {
    return onceEvent(emitter, event, options)
  }

  /**
   * `events.on(ch, event, options)` with its items typed by {@link ChannelEvents}:
   * `for await (const [data] of Channel.on(ch, 'message'))` gives `Buffer`s. For messages with
   * backpressure, use {@link Channel.messages}: `events.on` buffers without limit.
   */
  static override on<K extends keyof ChannelEvents>(
    emitter: Channel,
    event: K,
    options?: { signal?: AbortSignal },
  ): NodeJS.AsyncIterator<ChannelEvents[K]>
  /** Any other emitter or event target, as `events.on`. */
  static override on<E extends EventEmitter | EventTarget>(
    emitter: E extends Channel ? never : E,
    event: string | symbol,
    options?: object,
  ): NodeJS.AsyncIterator<any[]>
  static override on(emitter: any, event: any, options?: any): NodeJS.AsyncIterator<any[]> {
    return onEvent(emitter, event, options)
  }

  /** The channel's name. */
  readonly name: string
  #native: NativeChannel | null
  #onRequest: RequestHandler | undefined
  #onStream: StreamHandler | undefined
  #timeoutMs: number
  #nextId = 1
  #closing: Promise<void> | null = null
  #peerWaiters = new Set<{ resolve: () => void; reject: (e: Error) => void }>()
  #drainWaiters: Array<() => void> = []
  #referenced = true
  /** A send was refused for a full queue: emit 'drain' when the queue is empty again. */
  #wantDrain = false
  /** Open iterators of `messages()`. */
  #iterators = new Set<MessageIterator>()
  /** A peer was attached at some time. */
  #hadPeer = false
  /** `NODE_DEBUG` said that reading paused, and not yet that it resumed. */
  #pausedLogged = false
  /** Pid of the attached peer (for diagnostics). */
  #peerPid = 0
  /** Set when opening freed a side whose process is not visible from here (see {@link Channel.#noPeer}). */
  #unseen = ''
  #stats = new Counters()
  #send: SendBuffer
  #poller: Poller
  #receiver: Receiver
  #pending: PendingRequests
  #answering: Answering
  #streams: StreamTable

  /**
   * @internal Use {@link open}. `server`: the native lobby of the server (lib/server.ts) whose
   * clients' channels share one wake-up thread, for one of its clients' channels (typed `object`
   * so that the published types do not reach into the binding's).
   */
  constructor(name: string, options: OpenOptions = {}, server?: object) {
    super()
    this.name = checkName(name)
    const o = resolveOptions(options)
    this.#onRequest = o.onRequest
    this.#onStream = o.onStream
    this.#timeoutMs = o.timeoutMs
    const native = () => this.#native
    this.#poller = new Poller(
      {
        native,
        drain: () => this.#receiver.drain(),
        later: this.#later,
        paused: () => this.#readingPaused(),
        log: DEBUG ? (what) => debugLog('%s: %s', this.name, what) : undefined,
      },
      this.#stats,
      o.spinMicros,
    )
    this.#send = new SendBuffer(
      { native, waiting: () => this.#poller.heat(), fail: (e) => this.#fail(e) },
      this.#stats,
      o.maxQueueBytes,
      o.maxMessageBytes,
    )
    // A request given up on here is taken back, or the peer is told (its handler's ctx.signal aborts).
    const withdraw = (id: number) => this.#native !== null && this.#send.withdraw(this.#native, id)
    this.#pending = new PendingRequests(
      (id) => {
        withdraw(id)
        this.#stats.timeouts++
      },
      withdraw,
      (id, timeoutMs) => this.#timeoutError(`request ${id}`, timeoutMs),
    )
    this.#answering = new Answering(
      { native, handler: () => this.#onRequest, error: (e) => this.#emitError(e), queueFull: () => this.#queueFull() },
      this.#send,
    )
    this.#streams = new StreamTable({
      side: () => this.#native?.side ?? 0,
      send: (id, type, bytes) => {
        const native = this.#native
        if (native === null) throw new ClosedError()
        return this.#send.submit(native, KIND_STREAM, id, type, bytes)
      },
      wantDrain: () => {
        this.#wantDrain = true
      },
      handler: () => this.#onStream,
    })
    this.#receiver = new Receiver(
      {
        native,
        fail: (e) => this.#fail(e),
        heat: () => this.#poller.heat(),
        later: this.#later,
        connected: (change) => this.#onConnect(change),
        disconnected: (change) => this.#onDisconnect(change),
        paused: () => this.#readingPaused(),
        message: (payload) => {
          for (const it of this.#iterators) it.push(payload)
          this.#emitSafely('message', payload)
        },
        streamFrame: (id, type, payload) => this.#streams.onFrame(id, type, payload),
        request: (id, gen, payload) => this.#answering.onRequest(id, gen, payload),
        cancel: (id, gen) => this.#answering.cancel(id, gen),
        answer: (id, ok, payload) => this.#pending.answer(id, ok, payload),
        drained: () => this.#drained(),
      },
      this.#send,
      this.#stats,
    )
    try {
      this.#native = new binding.NativeChannel(
        name,
        // The wake-up thread does not spin: the JS thread does (see internal/polling.ts).
        {
          capacity: o.capacity,
          maxQueueBytes: o.maxQueueBytes,
          maxMessageBytes: o.maxMessageBytes,
          spinMicros: 0,
          mode: o.mode,
          deferWaking: server !== undefined,
        },
        this.#onWake,
      )
    } catch (e) {
      throw fromNative(e)
    }
    trackNative(this.#native, () => this.#send.flush())
    try {
      // Linux: the event loop sleeps on this side's loop bell, rung by the peer (src/loop_watch.rs).
      this.#native.watchLoopBell(this.#onRing)
      if (server !== undefined) this.#native.startWaking(server as NativeLobby)
    } catch (e) {
      this.#native.close()
      this.#native = null
      throw fromNative(e)
    }
    this.#unseen = this.#native.tookOverUnseen
    if (DEBUG && this.#unseen !== '') debugLog('%s: %s', name, this.#unseen)
    if (DEBUG) {
      const n = this.#native
      debugLog(
        'attach %s: side %d, generation %d, segment %s, capacity %d, pid %d, peer %s',
        name,
        n.side,
        n.generation,
        n.segmentName,
        n.capacity,
        process.pid,
        n.peerConnected ? 'attached' : 'none yet',
      )
    }
  }

  /**
   * Is a peer attached now? (Its slot in the segment says so, and it is the one this side
   * writes to.) The `'connect'`/`'disconnect'` events follow in order, once what was read
   * before them was delivered.
   */
  get connected(): boolean {
    return this.#native?.peerConnected ?? false
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
    return this.#native === null ? 0 : this.#native.queuedBytes + this.#send.stagedBytes
  }

  /**
   * Counters since the channel was opened. `sent`/`received`: messages (send-and-forget),
   * requests, answers (error answers included) and payload bytes, counted when accepted by
   * `send`/`request`/an answer and when delivered here. `timeouts`: requests that timed out;
   * `queueFullRejections`: sends, requests and answers refused for a full queue; `errors`:
   * `'error'` events (or warnings) raised; `remoteErrors`: error answers received. `wakeups`:
   * times the event loop was woken (its loop bell rung by the peer, or the native thread); `spinHits`: times polling found work without a
   * wake-up; `batches`: reads that delivered something, `largestBatch` the most messages in one.
   */
  stats(): ChannelStats {
    return this.#stats.snapshot(this.#pending.size, this.queuedBytes)
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
   * `TimeoutError`, `PeerGoneError` (the peer it went to left without answering; its `reached`
   * says whether the request got there), `RemoteError` (its handler failed),
   * `QueueFullError`, `TooLargeError`, `ClosedError` (closed while waiting), or an `AbortError`
   * when `options.signal` aborts (at once, sending nothing, if it already has). Never throws:
   * bad arguments (`ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`) and a channel already closed
   * (`ClosedError`) give a rejected promise too. `data` may be a string (sent as UTF-8). A request
   * made while no peer is attached waits in the queue (its timeout runs) and goes to the next
   * one; a request that went to a peer is answered by that peer or fails with it, never both.
   * After a timeout or an abort the request is taken out of the queue, or the peer is told and
   * its handler's `ctx.signal` aborts. The timeout runs from the end of the tick in which the
   * request was made: never early.
   */
  request(data: Payload, options?: RequestOptions): Promise<Buffer> {
    let native: NativeChannel
    let bytes: Uint8Array
    let timeoutMs: number
    let signal: AbortSignal | undefined
    try {
      native = this.#live()
      bytes = toBytes(data, 'data')
      timeoutMs = checkTimeout(options?.timeoutMs ?? this.#timeoutMs, 'timeoutMs')
      signal = checkSignal(options?.signal, 'signal')
    } catch (e) {
      return Promise.reject(e)
    }
    if (signal?.aborted) return Promise.reject(aborted(signal.reason))
    const id = this.#nextId++
    let r: number
    try {
      r = this.#send.submit(native, KIND_REQUEST, id, 0, bytes)
    } catch (e) {
      return Promise.reject(fromNative(e))
    }
    if (r === SEND_QUEUE_FULL) {
      this.#wantDrain = true
      return Promise.reject(this.#queueFull())
    }
    this.#poller.heat()
    const answer = this.#pending.add(id, timeoutMs, signal)
    // Reading may have stopped for a full messages() iterator; an answer must not wait behind it.
    if (this.#iterators.size > 0) this.#later(this.#receiver.drain)
    return answer
  }

  /**
   * Sends `data` and blocks this thread until the answer arrives (the original's synchronous
   * `RemoteRequest`). Throws the same errors as {@link Channel.request} rejects with (an
   * `AbortError` only for a signal aborted before the call: a blocked thread sees no abort). While it
   * blocks, this side answers nothing: if both sides call `requestSync` at each other at the same
   * time, both wait until their timeouts and throw `TimeoutError`; the channels keep working.
   */
  requestSync(data: Payload, options?: RequestOptions): Buffer {
    const native = this.#live()
    const bytes = toBytes(data, 'data')
    const timeoutMs = checkTimeout(options?.timeoutMs ?? this.#timeoutMs, 'timeoutMs')
    // Nothing can abort a thread that blocks; an aborted signal stops it from starting.
    const signal = checkSignal(options?.signal, 'signal')
    if (signal?.aborted) throw aborted(signal.reason)
    const id = this.#nextId++
    const stats = this.#stats
    try {
      this.#send.flush()
      const answer = native.requestSync(id, bytes, timeoutMs)
      stats.sentRequests++
      stats.sentBytes += bytes.length
      stats.receivedAnswers++
      stats.receivedBytes += answer.length
      return answer
    } catch (e) {
      let err = fromNative(e)
      if (err instanceof TimeoutError) {
        err = this.#timeoutError('requestSync', timeoutMs)
        stats.timeouts++
      } else if (err instanceof QueueFullError) stats.queueFullRejections++
      else if (err instanceof RemoteError) stats.remoteErrors++
      throw err
    } finally {
      // Messages that arrived while blocked were kept; deliver them.
      setImmediate(this.#receiver.drain)
    }
  }

  /**
   * Opens a stream to the peer's `onStream` handler with `data`, and `body` streamed after it if
   * given; returns the Readable of the peer's answer. Backpressure holds end to end: a side sends
   * only what the other has room for (its credit window per direction), so a stream never fills
   * the ring and ordinary messages pass it. Destroying the answer stream tells the peer to stop;
   * the peer's failure, its leaving, or `close()` destroy it with `RemoteError`, `PeerGoneError`
   * or `ClosedError`; a failing `body` fails the stream on both sides.
   */
  requestStream(data: Payload, body?: Readable): Readable {
    this.#live()
    const bytes = toBytes(data, 'data')
    if (body !== undefined && !(body instanceof Readable)) {
      throw argType(`body must be a stream.Readable, got ${describe(body)}`)
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
  send(data: Payload): boolean {
    const native = this.#live()
    const bytes = toBytes(data, 'data')
    let r: number
    try {
      r = this.#send.submit(native, KIND_MESSAGE, 0, 0, bytes)
    } catch (e) {
      throw fromNative(e)
    }
    // Sending alone is no reason to poll: nothing is expected back (what the peer sends wakes
    // this side as usual, and then it polls).
    if (r !== SEND_QUEUE_FULL) return true
    if (DEBUG && !this.#wantDrain)
      debugLog('%s: queue full, send refused (%d bytes waiting)', this.name, this.queuedBytes)
    this.#wantDrain = true
    return false
  }

  /**
   * The peer's send-and-forget messages as an async iterator, in the order sent:
   * `for await (const data of ch.messages({ signal })) { ... }`. It starts collecting when
   * called. Backpressure is real: while the iterator holds `highWaterMark` (default 64) unread
   * messages, this side stops reading the ring, so the ring fills and the peer's `send` returns
   * `false` until the loop reads on (then the peer gets `'drain'`).
   *
   * While reading is stopped, everything behind those messages in the ring waits with them: the
   * peer's requests to this side, stream frames, and the peer's `'connect'`/`'disconnect'`. Answers
   * to this side's own requests are never held back: while a request of this side (or a
   * stream) is waiting, reading goes on and the iterator buffers beyond its mark.
   *
   * `'message'` listeners still get every message, when it is read, and do not hold reading back;
   * every open iterator gets every message. The iteration ends when the channel closes (after
   * the messages it holds), throws `AbortError` when `signal` aborts (as `events.on` does), and
   * `break` ends it too; messages it held unread then are dropped.
   */
  messages(options: MessagesOptions = {}): AsyncIterableIterator<Buffer> {
    if (options === null || typeof options !== 'object') {
      throw argType(`options must be an object, got ${describe(options)}`)
    }
    const signal = checkSignal(options.signal, 'signal')
    const highWaterMark = checkInt(options.highWaterMark ?? 64, 'highWaterMark', 1, 2 ** 31 - 1)
    const it = new MessageIterator(
      {
        release: (i) => {
          this.#iterators.delete(i)
          this.#resumeReading()
        },
        resume: () => this.#resumeReading(),
      },
      highWaterMark,
      signal,
    )
    if (this.#closing !== null) it.end()
    else if (!it.ended) this.#iterators.add(it)
    return it
  }

  /** Reading stops while an iterator is full, unless an answer or a stream of ours waits. */
  #readingPaused(): boolean {
    if (this.#iterators.size === 0 || this.#pending.size > 0 || this.#streams.size > 0) return false
    for (const it of this.#iterators) {
      if (it.full) {
        if (DEBUG && !this.#pausedLogged) {
          this.#pausedLogged = true
          debugLog('%s: reading paused: a messages() iterator holds %d unread', this.name, it.buffered)
        }
        return true
      }
    }
    return false
  }

  #resumeReading(): void {
    if (this.#native === null) return
    if (DEBUG && this.#pausedLogged) {
      this.#pausedLogged = false
      debugLog('%s: reading resumed', this.name)
    }
    this.#later(this.#receiver.drain)
  }

  /**
   * Answers a request whose handler called `ctx.answerLater()`: with data, or with an Error (the
   * peer's request rejects with `RemoteError` carrying its message). Returns `true` when the
   * answer went out, `false` when the request no longer waits: its asker gave up on it (timeout
   * or abort; `ctx.signal` has aborted) or has left, or it was answered already. Nothing is kept
   * of requests that no longer wait (so that abandoned ones cost no memory), which is why a
   * second answer is `false` rather than an error. A request whose handler did not call
   * `answerLater()` is answered by what the handler returns: `answer()` for it is `false` too.
   * Throws a RangeError for an id this channel never gave out.
   */
  answer(id: number, result: Payload | Error): boolean {
    this.#live()
    const r = result instanceof Error ? result : toBytes(result, 'answer')
    return this.#answering.answer(id, r)
  }

  /**
   * Resolves when a peer is attached (at once if one is now); rejects with `TimeoutError` after
   * `timeoutMs` if given. Never throws: a closed channel or a bad timeout reject.
   */
  waitForPeer(timeoutMs?: number): Promise<void> {
    let native: NativeChannel
    try {
      native = this.#live()
      if (timeoutMs !== undefined) checkTimeout(timeoutMs, 'timeoutMs')
    } catch (e) {
      return Promise.reject(e)
    }
    if (native.peerConnected) return Promise.resolve()
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
          const why = this.#hadPeer ? 'the peer left and no other has attached' : this.#noPeer()
          reject(
            new TimeoutError(`no peer attached to channel ${JSON.stringify(this.name)} within ${timeoutMs} ms: ${why}`),
          )
        }, timeoutMs)
        if (!this.#referenced) timer.unref()
      }
      this.#peerWaiters.add(w)
    })
  }

  /** Keeps the process alive while the channel is open (the default), like a socket. After `close()` it does nothing. */
  ref(): this {
    if (this.#closing !== null || this.#native === null) return this
    this.#native.ref()
    this.#referenced = true
    return this
  }

  /** Lets the process exit although the channel is open. After `close()` it does nothing. */
  unref(): this {
    if (this.#closing !== null || this.#native === null) return this
    this.#native.unref()
    this.#referenced = false
    return this
  }

  /** Does the channel keep the process alive? (`false` once closed.) Like a socket's `hasRef()`. */
  hasRef(): boolean {
    return this.#referenced && this.#closing === null && this.#native !== null
  }

  /**
   * Closes the channel: pending requests reject with `ClosedError` and every later call throws
   * it. Messages already accepted go on into the ring while a peer is attached and takes them,
   * and close waits until the peer has delivered them (it gives up after 2 s without progress,
   * or when the peer leaves); any not confirmed as delivered are handed back by an `'error'`
   * event: a `PeerGoneError` with `undelivered` and `inDoubt`. The wake-up thread stops and, if
   * the peer is gone too, the segment is removed. Resolves when done; calling it again returns
   * the same promise.
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
      this.#send.flush()
    } catch {
      // a broken channel: nothing more can go out
    }
    // Wait while the queue drains and the peer delivers; give up after 2 s without progress (or
    // when the peer leaves).
    const left = () => native.queuedBytes + native.unreleasedBytes
    let waiting = left()
    let progressAt = performance.now()
    while (waiting > 0 && native.peerConnected && performance.now() - progressAt < 2000) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 10)
        this.#drainWaiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
      if (this.#native === null) return
      if (left() < waiting) progressAt = performance.now()
      waiting = left()
    }
    const report = this.#closeNative()
    if (report !== null && report.undelivered.length + report.inDoubt.length + report.partial > 0) {
      const { undelivered, inDoubt, partial } = report
      const partly = partial > 0 ? `, and ${partial} taken in part by the peer` : ''
      this.#emitError(
        new PeerGoneError(
          `${undelivered.length} accepted messages were not delivered and ${inDoubt.length} may not have been before the channel closed${partly}`,
          { undelivered, inDoubt },
        ),
      )
    }
    this.emit('close')
  }

  /** Leaves the native channel; returns what of ours it could not confirm as delivered. */
  #closeNative(): PeerChange | null {
    const native = this.#native
    this.#native = null
    this.#pending.stop()
    let report: PeerChange | null = null
    if (native) {
      untrackNative(native)
      report = native.close()
    }
    for (const w of this.#drainWaiters.splice(0)) w()
    return report
  }

  #rejectAll(reason: Error): void {
    // Iterators end after what they hold: normally on close(), with the error on a failure.
    for (const it of [...this.#iterators]) it.end(reason instanceof ClosedError ? undefined : reason)
    this.#iterators.clear()
    this.#pending.rejectAll(reason)
    for (const w of this.#peerWaiters) w.reject(reason)
    this.#peerWaiters.clear()
    this.#streams.abortAll(reason)
  }

  #queueFull(): QueueFullError {
    if (DEBUG) debugLog('%s: queue full, refused (%d bytes waiting)', this.name, this.queuedBytes)
    return new QueueFullError(`send queue is full: ${this.queuedBytes} bytes are waiting for the ring`)
  }

  /** The error of a request (`what`) that got no answer within `timeoutMs`, saying why it may not have. */
  #timeoutError(what: string, timeoutMs: number): TimeoutError {
    const on = `on channel ${JSON.stringify(this.name)}`
    if (!this.#hadPeer && !this.connected)
      return new TimeoutError(`no answer to ${what} ${on} within ${timeoutMs} ms: ${this.#noPeer()}`)
    if (!this.connected) {
      return new TimeoutError(
        `no answer to ${what} ${on} within ${timeoutMs} ms: the peer left and no other has attached`,
      )
    }
    return new TimeoutError(`no answer to ${what} ${on} within ${timeoutMs} ms`)
  }

  /**
   * Emits an event without letting a throwing listener break delivery of the rest of the batch;
   * the listener's exception is rethrown on its own tick, as an uncaught exception.
   */
  /** Why no peer may have come, for the errors of a channel that never had one. */
  #noPeer(): string {
    const why = 'no peer has attached to this channel since it was opened'
    if (this.#unseen !== '') return `${why}; when it was opened, ${this.#unseen}`
    return `${why} (is the other process running, and does it open the same name?)`
  }

  #emitSafely<K extends keyof ChannelEvents>(event: K, ...args: ChannelEvents[K]): void {
    try {
      ;(this.emit as (event: K, ...args: ChannelEvents[K]) => boolean)(event, ...args)
    } catch (e) {
      process.nextTick(() => {
        throw e
      })
    }
  }

  #emitError(e: Error): void {
    this.#stats.errors++
    const err = toSharmError(e)
    if (DEBUG) debugLog('%s: error %s: %s', this.name, err.code, err.message)
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else process.emitWarning(err)
  }

  /** A protocol error: fail everything, close at once. */
  #fail(err: Error): void {
    this.#send.discard()
    if (this.#closing === null) this.#closing = Promise.resolve()
    this.#rejectAll(err)
    this.#closeNative()
    this.#emitError(err)
    this.emit('close')
  }

  /** Runs `fn` in the next turn of the event loop; an unref'd channel does not keep it alive. */
  #later = (fn: () => void): void => {
    const im = setImmediate(fn)
    if (!this.#referenced) im.unref()
  }

  /** Called by the wake-up thread when there is something to read. */
  #onWake = (): void => {
    this.#stats.wakeups++
    if (DEBUG) debugLog('%s: woken by the wake-up thread', this.name)
    this.#receiver.drain()
  }

  /** The peer rang this side's loop bell. */
  #onRing = (): void => {
    this.#stats.wakeups++
    if (DEBUG) debugLog('%s: rung', this.name)
    if (this.#native !== null) this.#receiver.drain()
  }

  /** A drain ended: 'drain' if a refused sender waits and the queues are empty. */
  #drained(): void {
    if (this.#wantDrain && this.#native !== null && this.#send.nativeQueued + this.#send.stagedBytes === 0) {
      this.#wantDrain = false
      this.#streams.resume()
      if (DEBUG) debugLog('%s: queue drained', this.name)
      this.#emitSafely('drain')
    }
    for (const w of this.#drainWaiters.splice(0)) w()
  }

  #onDisconnect(change: PeerChange): void {
    this.#answering.peerLeft()
    // The requests that went to (or were queued for) this peer fail with it; later ones go to
    // the next peer.
    const unsent = new Set(change.requestsUnsent)
    const doubt = new Set(change.requestsInDoubt)
    const gen = change.generation
    this.#pending.rejectThrough(change.requestsThrough, (id) => {
      const reached = unsent.has(id) ? 'no' : doubt.has(id) ? 'maybe' : 'yes'
      const how =
        reached === 'no'
          ? 'it never reached the peer'
          : reached === 'maybe'
            ? "the peer's process had taken it when it stopped"
            : "the peer's handler had it"
      return new PeerGoneError(`the peer (generation ${gen}) left the channel before answering; ${how}`, { reached })
    })
    this.#streams.abortAll(new PeerGoneError('the peer left the channel during the stream'))
    const info: DisconnectInfo = {
      generation: gen,
      undelivered: change.undelivered,
      inDoubt: change.inDoubt,
      unconfirmed: change.undelivered.length + change.inDoubt.length + change.partial,
    }
    if (DEBUG) {
      debugLog(
        '%s: peer left: generation %d, pid %d, %d undelivered, %d in doubt',
        this.name,
        gen,
        this.#peerPid,
        info.undelivered.length,
        info.inDoubt.length,
      )
    }
    this.#emitSafely('disconnect', info)
  }

  #onConnect(change: PeerChange): void {
    for (const w of this.#peerWaiters) w.resolve()
    this.#peerWaiters.clear()
    this.#hadPeer = true
    this.#peerPid = change.pid
    const info: ConnectInfo = { generation: change.generation, pid: change.pid }
    if (DEBUG) debugLog('%s: peer attached: generation %d, pid %d', this.name, info.generation, info.pid)
    this.#emitSafely('connect', info)
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
