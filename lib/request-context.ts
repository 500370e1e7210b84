/**
 * What a request handler gets besides the data: the request's id, and the way to say that the
 * answer comes later (`ctx.answerLater()`, then `channel.answer(ctx.id, ...)`).
 *
 * @packageDocumentation
 */

/** Passed to the request handler along with the request's data. */
export class RequestContext {
  /** Identifies the request for `Channel.answer`; unique within this channel. */
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
