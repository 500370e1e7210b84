/**
 * Requests of ours waiting for their answers, and their deadlines: one timer for all of them,
 * armed for the earliest deadline (no timer per request).
 *
 * @internal
 * @packageDocumentation
 */
import { performance } from 'node:perf_hooks'

import { RemoteError, timedOut } from '../errors'

interface Pending {
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
  deadline: number
  timeoutMs: number
}

export class PendingRequests {
  #pending = new Map<number, Pending>()
  #timer: NodeJS.Timeout | null = null
  #timerAt = Infinity
  #stopped = false
  /** Called for a request whose deadline passed, before it rejects. */
  readonly #onTimeout: (id: number) => void

  constructor(onTimeout: (id: number) => void) {
    this.#onTimeout = onTimeout
  }

  get size(): number {
    return this.#pending.size
  }

  /** Waits for the answer to request `id` for `timeoutMs`. */
  add(id: number, timeoutMs: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs
      this.#pending.set(id, { resolve, reject, deadline, timeoutMs })
      if (deadline < this.#timerAt) this.#arm(deadline)
    })
  }

  /**
   * Settles request `id` with the peer's answer: resolves with `payload`, or (`ok` false: its
   * handler failed) rejects with a RemoteError carrying the payload as its message. Returns false
   * when it is not waiting (timed out or cancelled: a late answer is dropped).
   */
  answer(id: number, ok: boolean, payload: Buffer): boolean {
    const p = this.#pending.get(id)
    if (p === undefined) return false
    this.#pending.delete(id)
    if (ok) p.resolve(payload)
    else p.reject(new RemoteError(payload.toString('utf8')))
    return true
  }

  /** Rejects every waiting request with `reason`, calling `each(id)` first for each. */
  rejectAll(reason: Error, each?: (id: number) => void): void {
    const pending = [...this.#pending]
    this.#pending.clear()
    for (const [id, p] of pending) {
      each?.(id)
      p.reject(reason)
    }
  }

  /**
   * Rejects every waiting request with an id up to `through` (the ones that were meant for a
   * peer that left) with the error `reason(id)` gives.
   */
  rejectThrough(through: number, reason: (id: number) => Error): void {
    for (const [id, p] of this.#pending) {
      if (id > through) continue
      this.#pending.delete(id)
      p.reject(reason(id))
    }
  }

  /** No more deadlines: the channel closed. */
  stop(): void {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
    this.#timerAt = Infinity
  }

  #arm(at: number): void {
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
        this.#onTimeout(id)
        p.reject(timedOut(`request ${id}`, p.timeoutMs))
      } else if (p.deadline < next) {
        next = p.deadline
      }
    }
    if (next !== Infinity && !this.#stopped) this.#arm(next)
  }
}
