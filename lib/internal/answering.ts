/**
 * The peer's requests on this side: each gets a handle (the `RequestContext` id), runs the
 * handler, and is answered once, by what the handler returns or later by `Channel.answer`.
 *
 * A request stops waiting when it is answered, when its asker gives up on it (a cancel record:
 * it timed out or was aborted there) or when its asker leaves; then nothing of it is kept here
 * (its context's signal aborts, and whatever its handler gives later is dropped). So abandoned
 * requests cost no memory, however many there are: `answer()` tells an id that no longer waits
 * from one never issued by the handle counter alone.
 *
 * @internal
 * @packageDocumentation
 */
import { fromNative, QueueFullError, TooLargeError } from '../errors'
import type { Answer, RequestHandler } from '../options'
import { abandon, ASKER_GAVE_UP, ASKER_LEFT, RequestContext } from '../request-context'
import { native as binding, type NativeChannel } from './binding'
import type { SendBuffer } from './send-buffer'
import { argValue, describe, isThenable } from './validate'

const { KIND_RESPONSE, KIND_ERROR_RESPONSE, SEND_QUEUE_FULL } = binding

/** A request of the peer's being handled here: its context, with what the answer needs. */
class Incoming extends RequestContext {
  /** The peer's id of the request. */
  readonly wireId: number
  /** The peer's generation, echoed in the answer. */
  readonly gen: number
  readonly #answering: Answering

  constructor(handle: number, wireId: number, gen: number, answering: Answering) {
    super(handle)
    this.wireId = wireId
    this.gen = gen
    this.#answering = answering
  }

  override answerLater(): number {
    if (!this.deferred) {
      super.answerLater()
      this.#answering.answersLater(this)
    }
    return this.id
  }
}

/** What answering needs from its channel. */
export interface AnswerHost {
  native(): NativeChannel | null
  handler(): RequestHandler | undefined
  /** An answer could not go out and nobody called for it: report it. */
  error(err: Error): void
  /** Says why the queue refused (how much waits). */
  queueFull(): QueueFullError
}

export class Answering {
  readonly #host: AnswerHost
  readonly #send: SendBuffer
  /** Requests of the current peer that wait for their answers, by the peer's id. */
  #waiting = new Map<number, Incoming>()
  /** Those of them whose handler called answerLater(), by handle (for `answer()`). */
  #later = new Map<number, Incoming>()
  #nextHandle = 1
  /** The request whose handler runs now. */
  #running: Incoming | null = null

  constructor(host: AnswerHost, send: SendBuffer) {
    this.#host = host
    this.#send = send
  }

  /**
   * A request from the peer: runs the handler and answers with what it gives. A request answered
   * before its handler returns is never kept: nothing can give up on it meanwhile (cancels and
   * departures are read between handlers, not during one).
   */
  onRequest(wireId: number, gen: number, data: Buffer): void {
    const ctx = new Incoming(this.#nextHandle++, wireId, gen, this)
    const handler = this.#host.handler()
    if (handler === undefined) {
      this.#answerWith(ctx, new Error('the peer has no onRequest handler'), true, false)
      return
    }
    let result: Answer | Promise<Answer>
    this.#running = ctx
    try {
      result = handler(data, ctx)
    } catch (e) {
      this.#running = null
      if (!ctx.deferred) this.#answerWith(ctx, e, true, false)
      else this.#reply(ctx, e, true, false)
      return
    }
    this.#running = null
    if (ctx.deferred) return
    if (isThenable(result)) {
      // The peer's ids are unique within its generation: no two of its requests wait under one.
      this.#waiting.set(wireId, ctx)
      ;(result as Promise<Answer>).then(
        (v) => ctx.deferred || this.#reply(ctx, v, false, false),
        (e) => this.#reply(ctx, e, true, false),
      )
    } else {
      this.#answerWith(ctx, result as Answer, false, false)
    }
  }

  /** The handler of `ctx` called answerLater(): `answer()` may find it by its handle. */
  answersLater(ctx: Incoming): void {
    if (ctx === this.#running) this.#waiting.set(ctx.wireId, ctx)
    else if (this.#waiting.get(ctx.wireId) !== ctx) return
    this.#later.set(ctx.id, ctx)
  }

  /**
   * The peer gave up on its request `wireId` of generation `gen` (it timed out or was aborted
   * there): forget it and abort its signal. Unknown ids (answered meanwhile) are ignored.
   */
  cancel(wireId: number, gen: number): void {
    const ctx = this.#waiting.get(wireId)
    if (ctx === undefined || ctx.gen !== gen) return
    this.#forget(ctx)
    abandon(ctx, ASKER_GAVE_UP)
  }

  /**
   * `Channel.answer`: answers request `id` whose handler called `answerLater()`. Returns false
   * for a request that no longer waits (its asker gave up or left, or it was answered): nothing
   * is kept of such requests, so a second answer is `false` too; so is an answer for a request
   * whose handler did not call `answerLater()`. Throws a RangeError for an id this channel never
   * gave out.
   */
  answer(id: number, result: Buffer | Uint8Array | Error): boolean {
    const ctx = this.#later.get(id)
    if (ctx !== undefined) {
      this.#reply(ctx, result, result instanceof Error, true)
      return true
    }
    if (Number.isInteger(id) && id >= 1 && id < this.#nextHandle) return false
    throw argValue(`no request with id ${describe(id)} was received on this channel`, true)
  }

  /** The peer left: its requests here are answered to nobody. */
  peerLeft(): void {
    const left = this.#waiting
    this.#waiting = new Map()
    this.#later.clear()
    for (const ctx of left.values()) abandon(ctx, ASKER_LEFT)
  }

  /** `ctx` no longer waits: drops what is kept of it. */
  #forget(ctx: Incoming): void {
    this.#waiting.delete(ctx.wireId)
    if (ctx.deferred) this.#later.delete(ctx.id)
  }

  /**
   * Sends the answer to request `ctx`: `failed` says `result` was thrown/rejected (or is the
   * Error given to `answer()`); `explicit`: called by `answer()`, so errors throw.
   */
  #reply(ctx: Incoming, result: unknown, failed: boolean, explicit: boolean): void {
    if (this.#waiting.get(ctx.wireId) !== ctx) return // no longer waits: drop the answer
    this.#forget(ctx)
    this.#answerWith(ctx, result, failed, explicit)
  }

  /** Sends the answer to request `ctx`, which waits no longer: as {@link Answering.#reply}. */
  #answerWith(ctx: Incoming, result: unknown, failed: boolean, explicit: boolean): void {
    const native = this.#host.native()
    if (native === null) return
    let kind = KIND_RESPONSE
    let bytes: Uint8Array
    if (failed) {
      kind = KIND_ERROR_RESPONSE
      bytes = Buffer.from(result instanceof Error ? result.message : String(result))
    } else if (result === undefined || result === null) {
      bytes = Buffer.alloc(0)
    } else if (result instanceof Uint8Array) {
      bytes = result
    } else {
      kind = KIND_ERROR_RESPONSE
      bytes = Buffer.from(`handler answered with ${describe(result)}, expected a Buffer or Uint8Array`)
    }
    let r: number
    try {
      r = this.#send.submit(native, kind, ctx.wireId, ctx.gen, bytes)
    } catch (e) {
      const err = fromNative(e)
      if (err instanceof TooLargeError) {
        r = this.#send.submit(
          native,
          KIND_ERROR_RESPONSE,
          ctx.wireId,
          ctx.gen,
          Buffer.from(`answer not sent: ${err.message}`),
        )
      } else {
        if (explicit) throw err
        this.#host.error(err)
        return
      }
    }
    if (r === SEND_QUEUE_FULL) {
      const full = this.#host.queueFull()
      const err = new QueueFullError(`answer to a request could not be queued: ${full.message}`, { cause: full })
      if (explicit) throw err
      this.#host.error(err)
    }
  }
}
