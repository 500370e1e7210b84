/**
 * Requests of ours waiting for their answers, and their deadlines: one timer for all of them,
 * armed for the earliest deadline (no timer per request). Requests given an AbortSignal share
 * one 'abort' listener per signal, removed when the last of them settles.
 *
 * @internal
 * @packageDocumentation
 */
import { performance } from 'node:perf_hooks'

import { aborted, RemoteError, timedOut, type TimeoutError } from '../errors'

interface Pending {
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
  deadline: number
  timeoutMs: number
}

/** The requests waiting with one signal, and the one listener that aborts them. */
interface Watch {
  ids: Set<number>
  listener: () => void
}

export class PendingRequests {
  #pending = new Map<number, Pending>()
  #timer: NodeJS.Timeout | null = null
  #timerAt = Infinity
  #stopped = false
  /** Called for a request whose deadline passed, before it rejects. */
  readonly #onTimeout: (id: number) => void
  /** Called for a request whose signal aborted, before it rejects. */
  readonly #onAbort: (id: number) => void
  /** Signals of waiting requests. */
  #watches = new Map<AbortSignal, Watch>()

  /** The error of request `id` that timed out. */
  readonly #timeoutError: (id: number, timeoutMs: number) => TimeoutError

  constructor(
    onTimeout: (id: number) => void,
    onAbort: (id: number) => void,
    timeoutError: (id: number, timeoutMs: number) => TimeoutError = (id, ms) => timedOut(`request ${id}`, ms),
  ) {
    this.#onTimeout = onTimeout
    this.#onAbort = onAbort
    this.#timeoutError = timeoutError
  }

  get size(): number {
    return this.#pending.size
  }

  /**
   * Waits for the answer to request `id` for `timeoutMs`, or until `signal` (not aborted yet)
   * aborts: then it rejects with an AbortError.
   */
  add(id: number, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs
      this.#pending.set(
        id,
        signal === undefined
          ? { resolve, reject, deadline, timeoutMs }
          : this.#watched(id, signal, { resolve, reject, deadline, timeoutMs }),
      )
      if (deadline < this.#timerAt) this.#arm(deadline)
    })
  }

  /**
   * `p`, watching `signal`: however it settles, it stops watching first (so every way of settling
   * a request, here or added later, leaves no listener behind).
   */
  #watched(id: number, signal: AbortSignal, p: Pending): Pending {
    let w = this.#watches.get(signal)
    if (w === undefined) {
      const ids = new Set<number>()
      w = { ids, listener: () => this.#aborted(signal, ids) }
      this.#watches.set(signal, w)
      signal.addEventListener('abort', w.listener)
    }
    w.ids.add(id)
    const { resolve, reject } = p
    p.resolve = (b) => {
      this.#unwatch(signal, id)
      resolve(b)
    }
    p.reject = (e) => {
      this.#unwatch(signal, id)
      reject(e)
    }
    return p
  }

  /** Request `id` no longer watches `signal`; the last one out removes the listener. */
  #unwatch(signal: AbortSignal, id: number): void {
    const w = this.#watches.get(signal)
    if (w === undefined || !w.ids.delete(id) || w.ids.size > 0) return
    this.#watches.delete(signal)
    signal.removeEventListener('abort', w.listener)
  }

  /** `signal` aborted: rejects the requests waiting with it. */
  #aborted(signal: AbortSignal, ids: Set<number>): void {
    for (const id of [...ids]) {
      const p = this.#pending.get(id)
      if (p === undefined) continue
      this.#pending.delete(id)
      this.#onAbort(id)
      p.reject(aborted(signal.reason))
    }
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
        p.reject(this.#timeoutError(id, p.timeoutMs))
      } else if (p.deadline < next) {
        next = p.deadline
      }
    }
    if (next !== Infinity && !this.#stopped) this.#arm(next)
  }
}
