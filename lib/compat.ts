/**
 * sharmipc/compat: the .NET SharmIPC API, shaped like the original (`SharmIpc`, `SharmNpc`), on
 * top of sharmipc's own {@link open}/{@link Channel}. Results are `[ok, data]` pairs and calls
 * never throw once their arguments are valid; the handler is either the original's RemoteCall,
 * `(data) => [ok, data]`, or its AsyncRemoteCallHandler, `(msgId, data) => void`, answered later
 * with {@link SharmIpc.asyncAnswerOnRemoteCall}. See docs/porting.md for every member of the
 * original and how it maps here and to the native API.
 *
 * @packageDocumentation
 */
import { open, type Channel, type DisconnectInfo } from './channel'
import { ClosedError } from './errors'
import type { OpenOptions } from './options'
import type { ChannelStats } from './internal/stats'
import {
  argType,
  argValue,
  asError,
  checkFunction,
  checkSignal,
  checkTimeout,
  describe,
  EMPTY,
  isThenable,
  outOfRange,
} from './internal/validate'

/** An answer given by a handler: success flag and payload (`null` is sent as an empty payload). */
export type Answer = [ok: boolean, data: Buffer | Uint8Array | null]

/**
 * The result of a request. `ok` true: `data` is the peer's answer. `ok` false: `data` is `null`,
 * or what the peer's handler gave with its `false` answer; `error` says why (timeout, peer gone,
 * queue full, the peer answered false or its handler threw, disposed).
 */
export type RequestResult = [ok: boolean, data: Buffer | null, error?: Error]

/** The original's RemoteCall: answers each request by returning (or resolving to) `[ok, data]`. */
export type RemoteCall = (data: Buffer) => Answer | Promise<Answer>

/**
 * The original's AsyncRemoteCallHandler: answers request `msgId` later with
 * {@link SharmIpc.asyncAnswerOnRemoteCall}. For send-and-forget messages `msgId` is 0 (nothing
 * to answer).
 */
export type AsyncRemoteCallHandler = (msgId: number, data: Buffer) => void

/** Called with a description and the error for failures that belong to no call. */
export type ExternalExceptionHandler = (description: string, error: Error) => void

/** Which of the two handler forms a handler is, see {@link SharmIpcOptions.handlerForm}. */
export type HandlerForm = 'return' | 'answerLater'

/** Options of {@link SharmIpc}; the original's constructor parameters after the handler. */
export interface SharmIpcOptions {
  /**
   * The original's `bufferCapacity`: ring bytes per direction. Rounded up to a power of two, at
   * least 4096 (the original clamps to 256 to 1,000,000); at most 1 GiB. Default 1 MiB (the
   * original's 50,000 would be 65,536 here). The side that creates the channel decides.
   */
  bufferCapacity?: number
  /** The original's `maxQueueSizeInBytes`; sharmipc's `maxQueueBytes`. Default 20,000,000. */
  maxQueueSizeInBytes?: number
  /** The original's `ExternalExceptionHandler`; without it, such failures become process warnings. */
  externalExceptionHandler?: ExternalExceptionHandler
  /**
   * Which form the handler is: `'return'` (`(data) => [ok, data]`) or `'answerLater'`
   * (`(msgId, data) => void`). Default: by the handler's declared parameters, `handler.length`:
   * 2 means `'answerLater'`, 0 or 1 mean `'return'`. Set it for handlers whose `length` misleads
   * (rest parameters, default values, wrappers).
   */
  handlerForm?: HandlerForm
  /** Called when a peer attached (the original SharmNpc's `PeerConnected`). */
  peerConnected?: () => void
  /** Called when the peer left, closed or died (the original SharmNpc's `PeerDisconnected`). */
  peerDisconnected?: (info: DisconnectInfo) => void
  /** Default timeout of requests in ms, as the original's `timeoutMs` default. Default 30,000. */
  timeoutMs?: number
  /** sharmipc's `maxMessageBytes`: largest message sent or accepted. Default 256 MiB. */
  maxMessageBytes?: number
  /** sharmipc's `spinMicros`, see the README. */
  spinMicros?: number
  /** sharmipc's `latencyMode`, see the README. */
  latencyMode?: boolean
  /** sharmipc's `mode`: access mode of the segment when this side creates it. Default 0o600. */
  mode?: number
}

/** The original SharmNpc's PipeRole. sharmipc has no roles: either side may come first. */
export const PipeRole = { Server: 'server', Client: 'client' } as const
export type PipeRole = (typeof PipeRole)[keyof typeof PipeRole]

const OPTION_KEYS = new Set([
  'bufferCapacity',
  'maxQueueSizeInBytes',
  'externalExceptionHandler',
  'handlerForm',
  'peerConnected',
  'peerDisconnected',
  'timeoutMs',
  'maxMessageBytes',
  'spinMicros',
  'latencyMode',
  'mode',
])

/** Options of the original that have no counterpart here, and why. */
const DROPPED_OPTIONS: Record<string, string> = {
  protocolVersion:
    'protocolVersion has no counterpart: there is one protocol, and its version is checked when the second side attaches',
  externalProcessing:
    'externalProcessing has no counterpart: the handler always runs on the JS thread, one message after another, in order',
  verbose: 'verbose has no counterpart: failures always go to externalExceptionHandler (or become process warnings)',
  capacity: 'capacity is the native name: use bufferCapacity here',
  maxQueueBytes: 'maxQueueBytes is the native name: use maxQueueSizeInBytes here',
  onRequest: 'onRequest is the native option: pass the handler as the second constructor argument',
}

/** Prefix of the error message that carries a handler's `[false, data]` answer (base64). */
const FALSE_WITH_DATA = 'the handler answered false with data (base64): '
const FALSE_ANSWER = 'the handler answered false'

/** A payload argument: bytes, a string (UTF-8), or null/undefined for an empty payload. */
function payload(v: unknown, what: string): Uint8Array {
  if (v instanceof Uint8Array) return v
  if (v === null || v === undefined) return EMPTY
  if (typeof v === 'string') return Buffer.from(v, 'utf8')
  throw argType(`${what} must be a Buffer, a Uint8Array, a string or null, got ${describe(v)}`)
}

function timeout(v: unknown): number | undefined {
  return v === undefined ? undefined : checkTimeout(v, 'timeoutMs')
}

/** bufferCapacity → a ring capacity: the next power of two, at least 4096, at most 1 GiB. */
function ringCapacity(v: unknown): number {
  if (typeof v !== 'number') throw argType(`bufferCapacity must be a positive integer (bytes), got ${describe(v)}`)
  if (!Number.isInteger(v) || v < 1) {
    throw outOfRange(`bufferCapacity must be a positive integer (bytes), got ${describe(v)}`)
  }
  if (v > 2 ** 30) throw outOfRange(`bufferCapacity must be at most ${2 ** 30} (1 GiB), got ${v}`)
  let c = 4096
  while (c < v) c *= 2
  return c
}

/** Checks an `[ok, data]` pair; `what` names it in the error. */
function checkAnswer(v: unknown, what: string): { ok: boolean; data: Uint8Array } {
  if (!Array.isArray(v) || v.length < 1 || v.length > 2 || typeof v[0] !== 'boolean') {
    throw argType(`${what} must be [ok: boolean, data: Buffer | Uint8Array | null], got ${describe(v)}`)
  }
  if (v[1] !== undefined && v[1] !== null && !(v[1] instanceof Uint8Array)) {
    throw argType(`${what}: data must be a Buffer, a Uint8Array or null, got ${describe(v[1])}`)
  }
  return { ok: v[0], data: v[1] ?? EMPTY }
}

/** The error that carries a `[false, data]` answer to the asking side. */
function falseAnswer(data: Uint8Array): Error {
  if (data.length === 0) return new Error(FALSE_ANSWER)
  return new Error(FALSE_WITH_DATA + Buffer.from(data.buffer, data.byteOffset, data.length).toString('base64'))
}

/** A failed request as a result: `[false, data of a false answer or null, error]`. */
function failed(e: unknown): RequestResult {
  const err = asError(e)
  const remote = (err as { remoteMessage?: unknown }).remoteMessage
  if (typeof remote === 'string' && remote.startsWith(FALSE_WITH_DATA)) {
    return [false, Buffer.from(remote.slice(FALSE_WITH_DATA.length), 'base64'), err]
  }
  return [false, null, err]
}

/**
 * The original's `SharmIpc`, on a sharmipc channel. Both processes construct it with the same
 * name; there is no server and no client.
 *
 * @example
 * const sm = new SharmIpc('orders', (data) => [true, Buffer.from('ok')])
 * const [ok, answer] = await sm.remoteRequestAsync(Buffer.from('hello'))
 * sm.remoteRequestWithoutResponse(Buffer.from('note'))
 * await sm.dispose()
 */
export class SharmIpc {
  /** The original's `PeerConnected`: called when a peer attached. */
  peerConnected: (() => void) | null = null
  /** The original's `PeerDisconnected`: called when the peer left (closed or died). */
  peerDisconnected: ((info: DisconnectInfo) => void) | null = null
  /** The original's `ExternalExceptionHandler`. */
  externalExceptionHandler: ExternalExceptionHandler | null = null

  readonly #ch: Channel
  readonly #capacity: number
  #handler: RemoteCall | AsyncRemoteCallHandler
  #form: HandlerForm
  #disposing: Promise<void> | null = null

  /**
   * Opens (creates or joins) channel `name` (1 to 128 bytes of `A-Z a-z 0-9 . _ -`). `handler`
   * answers the peer's requests and also receives its send-and-forget messages (a `'return'`
   * handler's result for a message is ignored; an `'answerLater'` handler gets msgId 0). Throws
   * `TypeError`/`RangeError` for bad arguments, and what {@link open} throws (`BusyError`,
   * `ProtocolError`, an OS error).
   *
   * In TypeScript, an answer-later handler's parameters get their types from
   * `{ handlerForm: 'answerLater' }`: `new SharmIpc('jobs', (msgId, data) => ..., { handlerForm:
   * 'answerLater' })`, or from annotations: `(msgId: number, data: Buffer) => ...`. Without either,
   * strict TypeScript reports TS7006: it types an unannotated arrow function's parameters from the
   * first overload whose other arguments fit, and nothing but the option tells the two forms apart
   * there (a two-parameter arrow fits the return form's one-parameter type). The return form
   * `(data) => [true, data]` needs neither.
   */
  constructor(name: string, handler: RemoteCall, options?: SharmIpcOptions & { handlerForm?: 'return' })
  constructor(name: string, handler: AsyncRemoteCallHandler, options: SharmIpcOptions & { handlerForm: 'answerLater' })
  constructor(name: string, handler: RemoteCall | AsyncRemoteCallHandler, options?: SharmIpcOptions)
  constructor(name: string, handler: RemoteCall | AsyncRemoteCallHandler, options: SharmIpcOptions = {}) {
    if (typeof handler !== 'function') {
      throw argType(
        `handler must be a function, (data) => [ok, data] or (msgId, data) => void, got ${describe(handler)}`,
      )
    }
    if (options === null || typeof options !== 'object') {
      throw argType(`options must be an object, got ${describe(options)}`)
    }
    for (const k of Object.keys(options)) {
      if (DROPPED_OPTIONS[k] !== undefined) throw argValue(`unknown option ${JSON.stringify(k)}: ${DROPPED_OPTIONS[k]}`)
      if (!OPTION_KEYS.has(k)) {
        throw argValue(`unknown option ${JSON.stringify(k)}; expected one of ${[...OPTION_KEYS].join(', ')}`)
      }
    }
    this.#form = SharmIpc.#formOf(handler, options.handlerForm)
    this.#handler = handler
    for (const k of ['externalExceptionHandler', 'peerConnected', 'peerDisconnected'] as const) {
      checkFunction(options[k], k)
    }
    this.externalExceptionHandler = options.externalExceptionHandler ?? null
    this.peerConnected = options.peerConnected ?? null
    this.peerDisconnected = options.peerDisconnected ?? null
    const native: OpenOptions = { onRequest: (data, ctx) => this.#onRequest(data, ctx.answerLater.bind(ctx), ctx.id) }
    if (options.bufferCapacity !== undefined) native.capacity = ringCapacity(options.bufferCapacity)
    if (options.maxQueueSizeInBytes !== undefined) native.maxQueueBytes = options.maxQueueSizeInBytes
    for (const k of ['timeoutMs', 'maxMessageBytes', 'spinMicros', 'latencyMode', 'mode'] as const) {
      if (options[k] !== undefined) (native as Record<string, unknown>)[k] = options[k]
    }
    this.#ch = open(name, native)
    this.#capacity = this.#ch.capacity
    this.#ch.on('message', (data) => this.#onMessage(data))
    this.#ch.on('connect', () => this.#call('peerConnected callback', () => this.peerConnected?.()))
    this.#ch.on('disconnect', (info) => this.#call('peerDisconnected callback', () => this.peerDisconnected?.(info)))
    this.#ch.on('error', (e) => this.#report('channel error', e))
  }

  static #formOf(handler: Function, form: unknown): HandlerForm {
    if (form !== undefined) {
      if (form !== 'return' && form !== 'answerLater') {
        throw argValue(`handlerForm must be 'return' or 'answerLater', got ${describe(form)}`)
      }
      return form
    }
    if (handler.length === 2) return 'answerLater'
    if (handler.length <= 1) return 'return'
    throw argValue(
      `handler must take (data) => [ok, data] or (msgId, data) => void, got ${describe(handler)}; ` +
        `set handlerForm to 'return' or 'answerLater' to say which it is`,
    )
  }

  /** The channel's name (the original's `uniqueHandlerName`). */
  get name(): string {
    return this.#ch.name
  }

  /** Is a peer attached? (The original SharmNpc's `IsConnected`.) */
  get isConnected(): boolean {
    return this.#ch.connected
  }

  /** Ring bytes per direction in use (the creating side's `bufferCapacity`, rounded up). */
  get bufferCapacity(): number {
    return this.#capacity
  }

  /** Which form the handler has: `'return'` or `'answerLater'`. */
  get handlerForm(): HandlerForm {
    return this.#form
  }

  /** The sharmipc channel underneath, for what the original does not have (stats, events, ...). */
  get channel(): Channel {
    return this.#ch
  }

  /** The handler if it has the `'return'` form (the original SharmNpc's `RemoteCallHandler`), else null. */
  get remoteCallHandler(): RemoteCall | null {
    return this.#form === 'return' ? (this.#handler as RemoteCall) : null
  }
  /** Replaces the handler with a `'return'`-form one. */
  set remoteCallHandler(f: RemoteCall) {
    if (typeof f !== 'function') throw argType(`remoteCallHandler must be a function, got ${describe(f)}`)
    this.#handler = f
    this.#form = 'return'
  }

  /** The handler if it has the `'answerLater'` form (the original's `AsyncRemoteCallHandler`), else null. */
  get asyncRemoteCallHandler(): AsyncRemoteCallHandler | null {
    return this.#form === 'answerLater' ? (this.#handler as AsyncRemoteCallHandler) : null
  }
  /** Replaces the handler with an `'answerLater'`-form one. */
  set asyncRemoteCallHandler(f: AsyncRemoteCallHandler) {
    if (typeof f !== 'function') throw argType(`asyncRemoteCallHandler must be a function, got ${describe(f)}`)
    this.#handler = f
    this.#form = 'answerLater'
  }

  /**
   * Blocking RPC (the original's `RemoteRequest(data, null, timeoutMs)`): sends `data` and blocks
   * this thread until the answer, or until `timeoutMs` (default: the `timeoutMs` option, 30,000).
   * While it blocks, this side answers nothing: two sides that call it at each other at once
   * both get `[false, null, TimeoutError]`.
   *
   * With a callback (the original's `RemoteRequest(data, callback, timeoutMs)`), it does not
   * block: it returns `[true, null]` at once and calls `callback` with the result later, exactly
   * once (also when the request fails or the instance is disposed).
   *
   * Never throws for a failure; throws `TypeError`/`RangeError` at once for bad arguments.
   */
  remoteRequest(data: Buffer | Uint8Array | string | null, timeoutMs?: number): RequestResult
  remoteRequest(
    data: Buffer | Uint8Array | string | null,
    callback: (result: RequestResult) => void,
    timeoutMs?: number,
  ): RequestResult
  remoteRequest(
    data: Buffer | Uint8Array | string | null,
    callbackOrTimeout?: number | ((result: RequestResult) => void) | null,
    timeoutMs?: number,
  ): RequestResult {
    const bytes = payload(data, 'data')
    if (typeof callbackOrTimeout === 'function') {
      const callback = callbackOrTimeout
      this.remoteRequestAsync(bytes, timeoutMs).then((r) => this.#call('remoteRequest callback', () => callback(r)))
      return [true, null]
    }
    if (callbackOrTimeout !== undefined && callbackOrTimeout !== null && typeof callbackOrTimeout !== 'number') {
      throw argType(`the second argument must be a timeout (ms) or a callback, got ${describe(callbackOrTimeout)}`)
    }
    const ms = timeout(callbackOrTimeout ?? timeoutMs)
    if (this.#disposing !== null) return [false, null, new ClosedError('SharmIpc instance was disposed')]
    try {
      return [true, this.#ch.requestSync(bytes, ms === undefined ? undefined : { timeoutMs: ms })]
    } catch (e) {
      return failed(e)
    }
  }

  /**
   * RPC without blocking (the original's `RemoteRequestAsync`): resolves with `[true, answer]`,
   * or `[false, null | data of a false answer, error]`. `signal` (where .NET code passes a
   * CancellationToken) aborts it: `[false, null, AbortError]`, and the peer's handler sees its
   * `ctx.signal` abort, as after a timeout. It never throws and the promise never rejects: bad
   * arguments give `[false, null, TypeError | RangeError]` (with Node's `ERR_INVALID_ARG_TYPE`,
   * `ERR_INVALID_ARG_VALUE` or `ERR_OUT_OF_RANGE` code).
   */
  remoteRequestAsync(
    data: Buffer | Uint8Array | string | null,
    timeoutMs?: number,
    signal?: AbortSignal,
  ): Promise<RequestResult> {
    let bytes: Uint8Array
    let ms: number | undefined
    try {
      bytes = payload(data, 'data')
      ms = timeout(timeoutMs)
      checkSignal(signal, 'signal')
    } catch (e) {
      return Promise.resolve(failed(e))
    }
    if (this.#disposing !== null) {
      return Promise.resolve([false, null, new ClosedError('SharmIpc instance was disposed')])
    }
    try {
      return this.#ch
        .request(bytes, ms === undefined && signal === undefined ? undefined : { timeoutMs: ms, signal })
        .then((answer): RequestResult => [true, answer], failed)
    } catch (e) {
      return Promise.resolve(failed(e))
    }
  }

  /**
   * Send-and-forget (the original's `RemoteRequestWithoutResponse`): `true` when accepted for
   * sending, `false` when the queue is over `maxQueueSizeInBytes`, the message is too large, or
   * the instance is disposed. Accepted messages reach the peer's handler in the order sent.
   */
  remoteRequestWithoutResponse(data: Buffer | Uint8Array | string | null): boolean {
    const bytes = payload(data, 'data')
    if (this.#disposing !== null) return false
    try {
      return this.#ch.send(bytes)
    } catch {
      return false
    }
  }

  /**
   * Answers request `msgId` that an `'answerLater'` handler received (the original's
   * `AsyncAnswerOnRemoteCall`). `[true, data]` resolves the peer's request with `data`;
   * `[false, data]` gives it `[false, data]` (`[false, null]` for no data). Returns `true` when
   * the answer went out, `false` when there is nothing to answer: msgId 0 (a send-and-forget
   * message), an id already answered or unknown, an asker that left, a full queue, or a disposed
   * instance. Throws `TypeError` at once for arguments of the wrong shape.
   */
  asyncAnswerOnRemoteCall(msgId: number, answer: Answer): boolean {
    if (typeof msgId !== 'number') throw argType(`msgId must be a non-negative integer, got ${describe(msgId)}`)
    if (!Number.isInteger(msgId) || msgId < 0) {
      throw outOfRange(`msgId must be a non-negative integer, got ${describe(msgId)}`)
    }
    const { ok, data } = checkAnswer(answer, 'answer')
    if (msgId === 0 || this.#disposing !== null) return false
    try {
      return this.#ch.answer(msgId, ok ? data : falseAnswer(data))
    } catch (e) {
      if (!(e instanceof RangeError)) this.#report(`answer to request ${msgId} not sent`, asError(e))
      return false
    }
  }

  /** The channel's counters (see `Channel.stats()` in the README). */
  stats(): ChannelStats {
    return this.#ch.stats()
  }

  /**
   * Plain-text usage report (the original's `UsageReport`), built on the channel's counters: one
   * line of state, then `key: value` lines.
   */
  usageReport(): string {
    const s = this.#ch.stats()
    const state = this.#disposing !== null ? 'disposed' : this.#ch.connected ? 'connected' : 'not connected'
    const dir = (d: ChannelStats['sent']) =>
      `${d.messages} messages, ${d.requests} requests, ${d.answers} answers, ${d.bytes} bytes`
    return [
      `SharmIpc ${JSON.stringify(this.name)}: ${state}, ring ${this.#capacity} bytes per direction, ` +
        `handler form ${this.#form}, at ${new Date().toISOString()}`,
      `sent: ${dir(s.sent)}`,
      `received: ${dir(s.received)}`,
      `pending requests: ${s.pendingRequests}`,
      `timeouts: ${s.timeouts}`,
      `queue-full rejections: ${s.queueFullRejections}`,
      `error answers received: ${s.remoteErrors ?? 0}`,
      `errors: ${s.errors}`,
      `queued bytes: ${s.queuedBytes}`,
      `wake-ups: ${s.wakeups}`,
      `polling hits: ${s.spinHits}`,
      `batches: ${s.batches} (largest ${s.largestBatch} messages)`,
    ].join('\n')
  }

  /**
   * Closes the channel (the original's `Dispose`): pending requests end with
   * `[false, null, ClosedError]` (callbacks included), what was accepted for sending still goes
   * out while the peer reads (up to 2 s without progress), the peer sees a disconnect, and the
   * last side out removes the segment. Later calls return `false`/`[false, null]`. Calling it
   * again returns the same promise; it never rejects.
   */
  dispose(): Promise<void> {
    if (this.#disposing === null) {
      this.#disposing = this.#ch.close().catch((e) => this.#report('dispose', asError(e)))
    }
    return this.#disposing
  }

  /** `await using sm = new SharmIpc(...)` disposes it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose()
  }

  #onRequest(data: Buffer, answerLater: () => number, id: number): Uint8Array | Promise<Uint8Array> | undefined {
    if (this.#form === 'answerLater') {
      answerLater()
      try {
        ;(this.#handler as AsyncRemoteCallHandler)(id, data)
      } catch (e) {
        // The original leaves such a request without an answer until the caller's timeout.
        this.#report('exception in the answer-later handler', asError(e))
        try {
          this.#ch.answer(id, asError(e))
        } catch {
          // already answered, or the asker left
        }
      }
      return
    }
    let r: Answer | Promise<Answer>
    try {
      r = (this.#handler as RemoteCall)(data)
    } catch (e) {
      this.#report('exception in the request handler', asError(e))
      throw e
    }
    if (isThenable(r)) {
      return Promise.resolve(r).then(
        (v) => this.#toAnswer(v),
        (e) => {
          this.#report('the request handler rejected', asError(e))
          throw e
        },
      )
    }
    return this.#toAnswer(r)
  }

  /** A `'return'` handler's result as sharmipc's answer: the data, or a thrown error for false. */
  #toAnswer(v: unknown): Uint8Array {
    let a: { ok: boolean; data: Uint8Array }
    try {
      a = checkAnswer(v, 'the result of the request handler')
    } catch (e) {
      this.#report('bad result of the request handler', asError(e))
      throw e
    }
    if (!a.ok) throw falseAnswer(a.data)
    return a.data
  }

  #onMessage(data: Buffer): void {
    const handler = this.#handler
    if (this.#form === 'answerLater') {
      this.#call('exception in the answer-later handler (send-and-forget message)', () =>
        (handler as AsyncRemoteCallHandler)(0, data),
      )
      return
    }
    this.#call('exception in the request handler (send-and-forget message)', () => {
      const r = (handler as RemoteCall)(data)
      if (isThenable(r)) {
        r.then(undefined, (e) => this.#report('the request handler rejected (send-and-forget message)', asError(e)))
      }
    })
  }

  /** Runs user code that must not break delivery; reports what it throws. */
  #call(what: string, f: () => void): void {
    try {
      f()
    } catch (e) {
      this.#report(what, asError(e))
    }
  }

  #report(description: string, error: Error): void {
    const h = this.externalExceptionHandler
    if (h !== null) {
      try {
        h(description, error)
        return
      } catch (e) {
        error = asError(e)
        description = `externalExceptionHandler threw while reporting "${description}"`
      }
    }
    process.emitWarning(`${description}: ${error.message}`, { code: 'ERR_SHARM_COMPAT' })
  }
}

/**
 * The original's `SharmNpc(name, role, handler, ...)`: the same as {@link SharmIpc}. The role is
 * checked and kept but changes nothing: either side may come first, and two "servers" can talk.
 */
export class SharmNpc extends SharmIpc {
  /** The role given to the constructor (no effect). */
  readonly role: PipeRole

  /** As {@link SharmIpc}'s constructor, with the original's role (see there for the handler's types). */
  constructor(name: string, role: PipeRole, handler: RemoteCall, options?: SharmIpcOptions & { handlerForm?: 'return' })
  constructor(
    name: string,
    role: PipeRole,
    handler: AsyncRemoteCallHandler,
    options: SharmIpcOptions & { handlerForm: 'answerLater' },
  )
  constructor(name: string, role: PipeRole, handler: RemoteCall | AsyncRemoteCallHandler, options?: SharmIpcOptions)
  constructor(
    name: string,
    role: PipeRole,
    handler: RemoteCall | AsyncRemoteCallHandler,
    options: SharmIpcOptions = {},
  ) {
    if (role !== PipeRole.Server && role !== PipeRole.Client) {
      throw argValue(`role must be PipeRole.Server ('server') or PipeRole.Client ('client'), got ${describe(role)}`)
    }
    super(name, handler, options)
    this.role = role
  }
}
