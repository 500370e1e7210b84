/**
 * The peer's requests on this side: each gets a handle (the `RequestContext` id), runs the
 * handler, and is answered once, by what the handler returns or later by `Channel.answer`.
 * Requests of a peer that left are orphaned: their answers are dropped.
 *
 * @internal
 * @packageDocumentation
 */
import { fromNative, QueueFullError, TooLargeError } from '../errors'
import type { Answer, RequestHandler } from '../options'
import { RequestContext } from '../request-context'
import { native as binding, type NativeChannel } from './binding'
import type { SendBuffer } from './send-buffer'
import { describe, isThenable } from './validate'

const { KIND_RESPONSE, KIND_ERROR_RESPONSE, SEND_QUEUE_FULL } = binding

/** A request of the peer's being handled here. */
interface Awaiting {
  /** The peer's id of the request. */
  wireId: number
  /** The peer's generation, echoed in the answer. */
  gen: number
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
  #awaiting = new Map<number, Awaiting>()
  #orphaned = new Set<number>()
  #nextHandle = 1

  constructor(host: AnswerHost, send: SendBuffer) {
    this.#host = host
    this.#send = send
  }

  /** A request from the peer: runs the handler and answers with what it gives. */
  onRequest(wireId: number, gen: number, data: Buffer): void {
    const handle = this.#nextHandle++
    const a: Awaiting = { wireId, gen }
    this.#awaiting.set(handle, a)
    const handler = this.#host.handler()
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
   * `Channel.answer`: answers request `id` whose handler called `answerLater()`. Returns false
   * when its asker has left; throws a RangeError for an id that is not waiting for an answer.
   */
  answer(id: number, result: Buffer | Uint8Array | Error): boolean {
    if (this.#orphaned.delete(id)) return false
    const a = this.#awaiting.get(id)
    if (a === undefined) throw new RangeError(`no request with id ${describe(id)} is waiting for an answer`)
    this.#reply(id, a, result, result instanceof Error, true)
    return true
  }

  /** The peer left: its requests here are answered to nobody. */
  peerLeft(): void {
    for (const handle of this.#awaiting.keys()) this.#orphaned.add(handle)
    this.#awaiting.clear()
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
      r = this.#send.submit(native, kind, a.wireId, a.gen, bytes)
    } catch (e) {
      const err = fromNative(e)
      if (err instanceof TooLargeError) {
        r = this.#send.submit(
          native,
          KIND_ERROR_RESPONSE,
          a.wireId,
          a.gen,
          Buffer.from(`answer not sent: ${err.message}`),
        )
      } else {
        if (explicit) throw err
        this.#host.error(err)
        return
      }
    }
    if (r === SEND_QUEUE_FULL) {
      const err = new QueueFullError(`answer to a request could not be queued: ${this.#host.queueFull().message}`)
      if (explicit) throw err
      this.#host.error(err)
    }
  }
}
