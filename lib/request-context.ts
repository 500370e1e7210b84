/**
 * What a request handler gets besides the data: the request's id, the way to say that the
 * answer comes later (`ctx.answerLater()`, then `channel.answer(ctx.id, ...)`), and a signal that
 * aborts when the asker no longer waits (`ctx.signal`).
 *
 * @packageDocumentation
 */
import { PeerGoneError } from './errors'

/** The asker stopped waiting: its request timed out or was aborted there. */
export const ASKER_GAVE_UP = 1
/** The asking process left the channel. */
export const ASKER_LEFT = 2
type Abandoned = typeof ASKER_GAVE_UP | typeof ASKER_LEFT

function reasonFor(why: Abandoned): Error {
  return why === ASKER_GAVE_UP
    ? new DOMException('the asker no longer waits for this request (it timed out or was aborted)', 'AbortError')
    : new PeerGoneError('the asking process left the channel before the answer')
}

let abandonContext: (ctx: RequestContext, why: Abandoned) => void

/** Passed to the request handler along with the request's data. */
export class RequestContext {
  /** Identifies the request for `Channel.answer`; unique within this channel. */
  readonly id: number
  #deferred = false
  /** Why the asker stopped waiting (0: it waits). */
  #abandoned: 0 | Abandoned = 0
  /** Made when `signal` is first read: a handler that never reads it costs nothing. */
  #controller: AbortController | undefined = undefined

  static {
    abandonContext = (ctx, why) => {
      if (ctx.#abandoned !== 0) return
      ctx.#abandoned = why
      ctx.#controller?.abort(reasonFor(why))
    }
  }

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

  /**
   * Aborts when the asker no longer waits for the answer: its request timed out or was aborted
   * there (`reason`: a DOMException named `'AbortError'`), or the asking process left (`reason`:
   * a `PeerGoneError`). Whatever the handler answers after that goes nowhere. Pass it on to work
   * that can stop early (`fetch`, `setTimeout` of `timers/promises`, streams, ...).
   */
  get signal(): AbortSignal {
    let c = this.#controller
    if (c === undefined) {
      c = this.#controller = new AbortController()
      if (this.#abandoned !== 0) c.abort(reasonFor(this.#abandoned))
    }
    return c.signal
  }
}

/** The asker stopped waiting for `ctx`'s request: aborts its signal (if it was read). @internal */
export function abandon(ctx: RequestContext, why: Abandoned): void {
  abandonContext(ctx, why)
}
