/**
 * The iterator of `Channel.messages()`: a queue of send-and-forget messages that tells its
 * channel when it is full, so that the channel stops reading the ring (and the peer's `send`
 * returns `false`) until the consumer catches up.
 *
 * @internal
 * @packageDocumentation
 */
import { aborted } from '../errors'

/** What the iterator needs from its channel. */
export interface IteratorHost {
  /** The iterator ended (returned, aborted, or its channel closed): forget it. */
  release(it: MessageIterator): void
  /** The iterator has room again after being full: read on. */
  resume(): void
}

export class MessageIterator implements AsyncIterableIterator<Buffer> {
  readonly #host: IteratorHost
  readonly #highWaterMark: number
  #items: Buffer[] = []
  #head = 0
  #waiter: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: unknown) => void } | null = null
  /** No more messages will come: after the buffered ones, `done` (or `#error` once). */
  #ended = false
  #error: unknown = undefined
  #signal: AbortSignal | undefined
  #onAbort = (): void => this.#abort()

  constructor(host: IteratorHost, highWaterMark: number, signal: AbortSignal | undefined) {
    this.#host = host
    this.#highWaterMark = highWaterMark
    this.#signal = signal
    if (signal?.aborted) this.#abort()
    else signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  /** The iteration ended (nothing more will be pushed). */
  get ended(): boolean {
    return this.#ended
  }

  /** Messages waiting to be read. */
  get buffered(): number {
    return this.#items.length - this.#head
  }

  /** Holds `highWaterMark` messages or more: the channel should stop reading. */
  get full(): boolean {
    return !this.#ended && this.buffered >= this.#highWaterMark
  }

  /** A message arrived. */
  push(data: Buffer): void {
    if (this.#ended) return
    const w = this.#waiter
    if (w !== null) {
      this.#waiter = null
      w.resolve({ value: data, done: false })
    } else {
      this.#items.push(data)
    }
  }

  /** The channel closed: the buffered messages are still read, then the iteration ends (throwing `err` if given). */
  end(err?: Error): void {
    if (this.#ended) return
    this.#ended = true
    this.#error = err
    this.#detach()
    const w = this.#waiter
    if (w !== null) {
      this.#waiter = null
      this.#settleEnd(w)
    }
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.buffered > 0) {
      const wasFull = this.full
      const value = this.#items[this.#head]!
      this.#items[this.#head++] = undefined as unknown as Buffer
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head)
        this.#head = 0
      }
      if (wasFull && !this.full) this.#host.resume()
      return Promise.resolve({ value, done: false })
    }
    if (this.#ended) {
      return new Promise((resolve, reject) => this.#settleEnd({ resolve, reject }))
    }
    if (this.#waiter !== null) {
      // A second next() before the first settled: queue behind it.
      const before = this.#waiter
      return new Promise((resolve, reject) => {
        this.#waiter = {
          resolve: (r) => {
            before.resolve(r)
            this.next().then(resolve, reject)
          },
          reject: (e) => {
            before.reject(e)
            this.next().then(resolve, reject)
          },
        }
      })
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject }
    })
  }

  /** Ends the iteration (`break` out of `for await` calls it); buffered messages are dropped. */
  return(): Promise<IteratorResult<Buffer>> {
    this.#drop()
    this.end()
    return Promise.resolve({ value: undefined, done: true })
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  #settleEnd(w: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: unknown) => void }): void {
    const err = this.#error
    if (err !== undefined) {
      this.#error = undefined
      w.reject(err)
    } else {
      w.resolve({ value: undefined, done: true })
    }
  }

  #abort(): void {
    const reason = this.#signal?.reason
    this.#drop()
    this.end(aborted(reason))
  }

  #drop(): void {
    this.#items = []
    this.#head = 0
  }

  #detach(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#signal = undefined
    this.#host.release(this)
  }
}
