/**
 * Requests of ours waiting for their answers, and their deadlines: one timer for all of them,
 * armed for the earliest deadline (no timer per request). Requests given an AbortSignal share
 * one 'abort' listener per signal, removed when the last of them settles.
 *
 * A request waits in a table indexed by the low bits of its id (ids count up by one, so the
 * requests in flight at once fall on distinct places); one still waiting when a later id needs
 * its place moves to a map. Its deadline is dated once per tick for every request made in it, at
 * the end of the tick: a timeout never comes early, and late by no more than the rest of the tick
 * in which the request was made (a timer could not have run then either).
 *
 * @internal
 * @packageDocumentation
 */
import { performance } from 'node:perf_hooks'

import { aborted, RemoteError, timedOut, type TimeoutError } from '../errors'

interface Pending {
  readonly id: number
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
  /** `Infinity` until the end of the tick it was made in dates it. */
  deadline: number
  readonly timeoutMs: number
}

/** The requests waiting with one signal, and the one listener that aborts them. */
interface Watch {
  ids: Set<number>
  listener: () => void
}

/** Places in the table of waiting requests (a power of two). */
const TABLE_SIZE = 1024
const TABLE_MASK = TABLE_SIZE - 1

const byId = (a: Pending, b: Pending): number => a.id - b.id

export class PendingRequests {
  /** Waiting requests by `id & TABLE_MASK`. */
  readonly #table: (Pending | undefined)[] = new Array<Pending | undefined>(TABLE_SIZE).fill(undefined)
  /** Waiting requests whose place a later one took. */
  readonly #moved = new Map<number, Pending>()
  #size = 0
  /** Made this tick: dated at its end. */
  #undated: Pending[] = []
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
    return this.#size
  }

  /**
   * Waits for the answer to request `id` (greater than every id added before) for `timeoutMs`,
   * or until `signal` (not aborted yet) aborts: then it rejects with an AbortError.
   */
  add(id: number, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const p: Pending = { id, resolve, reject, deadline: Infinity, timeoutMs }
      this.#put(signal === undefined ? p : this.#watched(id, signal, p))
      if (this.#undated.push(p) === 1) process.nextTick(this.#date)
    })
  }

  #put(p: Pending): void {
    const at = p.id & TABLE_MASK
    const there = this.#table[at]
    if (there !== undefined) this.#moved.set(there.id, there)
    this.#table[at] = p
    this.#size++
  }

  /** Takes request `id` out, if it waits. */
  #take(id: number): Pending | undefined {
    const at = id & TABLE_MASK
    const p = this.#table[at]
    if (p !== undefined && p.id === id) {
      this.#table[at] = undefined
      this.#size--
      return p
    }
    if (this.#moved.size === 0) return undefined
    const q = this.#moved.get(id)
    if (q !== undefined) {
      this.#moved.delete(id)
      this.#size--
    }
    return q
  }

  /** Calls `fn` for every waiting request, in no order. */
  #forEach(fn: (p: Pending) => void): void {
    for (const p of this.#moved.values()) fn(p)
    for (const p of this.#table) if (p !== undefined) fn(p)
  }

  /** Every waiting request that `keep` keeps, by id. */
  #all(keep: (p: Pending) => boolean = () => true): Pending[] {
    const all: Pending[] = []
    this.#forEach((p) => keep(p) && all.push(p))
    return all.sort(byId)
  }

  /** The end of a tick in which requests were made: their deadlines run from now. */
  #date = (): void => {
    const undated = this.#undated
    this.#undated = []
    const now = performance.now()
    let first = Infinity
    for (const p of undated) {
      p.deadline = now + p.timeoutMs
      if (p.deadline < first) first = p.deadline
    }
    if (first < this.#timerAt && !this.#stopped) this.#arm(first)
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
      const p = this.#take(id)
      if (p === undefined) continue
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
    const p = this.#take(id)
    if (p === undefined) return false
    if (ok) p.resolve(payload)
    else p.reject(new RemoteError(payload.toString('utf8')))
    return true
  }

  /** Rejects every waiting request with `reason`, calling `each(id)` first for each, by id. */
  rejectAll(reason: Error, each?: (id: number) => void): void {
    const all = this.#all()
    this.#table.fill(undefined)
    this.#moved.clear()
    this.#size = 0
    for (const p of all) {
      each?.(p.id)
      p.reject(reason)
    }
  }

  /**
   * Rejects every waiting request with an id up to `through` (the ones that were meant for a
   * peer that left) with the error `reason(id)` gives, by id.
   */
  rejectThrough(through: number, reason: (id: number) => Error): void {
    for (const p of this.#all((p) => p.id <= through)) {
      if (this.#take(p.id) === p) p.reject(reason(p.id))
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
    const due: Pending[] = []
    let next = Infinity
    this.#forEach((p) => {
      if (p.deadline <= now) due.push(p)
      else if (p.deadline < next) next = p.deadline
    })
    for (const p of due.sort(byId)) {
      // (An earlier one's timeout may have settled it: it fails the channel when a cancel fails.)
      if (this.#take(p.id) !== p) continue
      this.#onTimeout(p.id)
      p.reject(this.#timeoutError(p.id, p.timeoutMs))
    }
    if (next !== Infinity && !this.#stopped) this.#arm(next)
  }
}
