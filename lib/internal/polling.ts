/**
 * When this side looks at the rings itself instead of waiting to be woken: after something
 * arrived or a request went out, the JS thread polls between turns of the event loop for its spin
 * budget (`spinMicros` while spinning pays off, less or none while it does not: see `#paid`),
 * busy-waiting natively (`spin`, at most {@link SPIN_SLICE_MICROS} a turn) only while the loop had
 * nothing else to do; meanwhile the wake-up thread rests (`setDriving(true)`). After the budget
 * without work it waits to be woken: by the peer's ring on its loop bell, or by the wake-up thread
 * (whose side of the strategy is `crates/sharm-core/src/channel/wake.rs`).
 *
 * @internal
 * @packageDocumentation
 */
import { performance } from 'node:perf_hooks'

import { native as binding, type NativeChannel } from './binding'
import type { Counters } from './stats'

const { SPIN_FOUND, SPIN_CROWDED, SPIN_PEER_WOKEN } = binding

/** A gap between two spin turns longer than this (ms) means the event loop has other work. */
const BUSY_GAP_MS = 0.02
/** Longest busy-wait (µs) in one turn of the event loop. */
const SPIN_SLICE_MICROS = 50
/** A wait that ended within this (ms) was worth spinning through: the peer was running. */
const FAST_WAIT_MS = 0.05
/**
 * A wait for a peer that this side had to wake (it slept when this side's message went out)
 * includes the peer's wake-up: the spin lasts this much longer (ms) to see it, and a wait that
 * was longer than a fast one by no more than this counts neither way. Without it a side whose peer
 * slept once, for whatever reason, counted the peer's wake-up against spinning, spun less, slept
 * itself, and its own wake-ups then counted against the peer's spinning: on a quiet machine both
 * ended up sleeping. (Counting such a wait as fast instead kept a side spinning on a machine with
 * no free core, where every wait for a peer waiting for a core is one.)
 */
const WAKE_ALLOWANCE_MS = 0.2
/** A spin budget below this (ms) is none: spinning is off. */
const MIN_BUDGET_MS = 0.002
/**
 * With spinning off, it is tried again in the first {@link RETRY_WINDOW_MS} of every
 * {@link RETRY_PERIOD_MS} of the clock, the same instants in every process on the machine: spinning
 * pays off only when both sides spin, and both try at once.
 */
const RETRY_PERIOD_MS = 10
const RETRY_WINDOW_MS = 1
/** After a spin found no free core on the machine, spinning is not tried again for this long (ms). */
const CROWDED_MS = 300

/** What the poller needs from its channel. */
export interface PollHost {
  /** The native channel, `null` once closed. */
  native(): NativeChannel | null
  /** Reads what arrived. */
  drain(): void
  /** Runs `fn` in the next turn of the event loop (unref'd with the channel). */
  later(fn: () => void): void
  /** Reading is stopped: polling would find the same unread records again and again. */
  paused(): boolean
  /** Logs a change of strategy (`NODE_DEBUG=sharmipc`); absent when logging is off. */
  log?: (what: string) => void
}

export class Poller {
  readonly #host: PollHost
  readonly #stats: Counters
  /** How long (ms) to keep polling after the last work; 0: never. */
  readonly #spinMs: number
  /** Polling is on (a spin turn is scheduled). */
  #hot = false
  #lastWork = 0
  /** Something was sent or delivered since the last spin turn. */
  #active = false
  /** When the last spin turn ended (ms, performance.now()). */
  #turnEnd = 0
  /**
   * How long (ms) to poll after the last work now: `#spinMs` while spinning pays off, halved by
   * each wait that spinning did not shorten, 0 (off) below {@link MIN_BUDGET_MS}.
   */
  #budgetMs: number
  /** Spinning is off until this time (ms, performance.now()): no core was free. */
  #crowdedUntil = 0
  /** A message of this side's woke the peer since the last wait ended: allow for its wake-up. */
  #wokePeer = false

  constructor(host: PollHost, stats: Counters, spinMicros: number) {
    this.#host = host
    this.#stats = stats
    this.#spinMs = spinMicros / 1000
    this.#budgetMs = this.#spinMs
  }

  /** Work happened (an arrival, a request, bytes waiting for ring space): poll for a while. */
  heat(): void {
    if (this.#spinMs === 0) return
    this.#active = true
    if (this.#hot) return
    const native = this.#host.native()
    if (native === null || this.#host.paused()) return
    if (this.#budgetMs === 0) {
      // Spinning is off: the peer's ring wakes this side. Try it again now and then.
      const now = performance.timeOrigin + performance.now()
      if (now % RETRY_PERIOD_MS >= RETRY_WINDOW_MS || performance.now() < this.#crowdedUntil) return
      this.#budgetMs = Math.min(this.#spinMs, FAST_WAIT_MS)
    }
    this.#hot = true
    this.#lastWork = this.#turnEnd = performance.now()
    this.#host.log?.(`polling for up to ${this.#budgetMs * 1000} µs after the last work`)
    native.setDriving(true)
    this.#host.later(this.#spinTurn)
  }

  #spinTurn = (): void => {
    const native = this.#host.native()
    if (native === null) {
      this.#hot = false
      return
    }
    if (this.#host.paused()) {
      // The wake-up thread watches meanwhile (it notifies again while the records stay unread).
      this.#hot = false
      native.setDriving(false)
      return
    }
    const t = performance.now()
    if (this.#active) {
      this.#active = false
      this.#lastWork = t
    }
    // Busy-wait only while the event loop has nothing else to do. When other work ran since the
    // last turn (a sending loop, other I/O), look once and let it go on.
    const othersBusy = t - this.#turnEnd > BUSY_GAP_MS
    const waited = t - this.#lastWork
    const left = this.#budgetMs + (this.#wokePeer ? WAKE_ALLOWANCE_MS : 0) - waited
    let spin = SPIN_FOUND
    try {
      spin = native.spin(othersBusy ? 0 : Math.max(0, Math.min(SPIN_SLICE_MICROS, Math.ceil(left * 1000))))
    } catch {
      // closed or broken: the drain below reports it
    }
    if (spin & SPIN_PEER_WOKEN) this.#wokePeer = true
    if (spin & SPIN_CROWDED) this.#crowded()
    // (The spin may have just said that the peer was woken: its allowance counts from now on. A
    // side that does not spin, crowded out, has none.)
    const allowance = this.#wokePeer && this.#budgetMs > 0 ? WAKE_ALLOWANCE_MS : 0
    if (spin & SPIN_FOUND) {
      this.#stats.spinHits++
      const now = performance.now()
      const wait = now - this.#lastWork
      // A wait longer than a fast one only by the peer's wake-up says nothing of spinning: the
      // budget stays as it is.
      if (now >= this.#crowdedUntil && (wait <= FAST_WAIT_MS || wait > FAST_WAIT_MS + allowance)) {
        this.#paid(wait <= FAST_WAIT_MS)
      }
      this.#wokePeer = false
      this.#active = true
      this.#host.drain()
    } else if (this.#budgetMs + allowance - waited <= 0) {
      // Quiet for the budget (none when crowded out): wait to be woken (the peer's ring, or the
      // wake-up thread).
      this.#paid(false)
      this.#wokePeer = false
      this.#host.log?.('quiet: polling stops, waiting to be woken')
      this.#hot = false
      native.setDriving(false)
      return
    }
    if (this.#host.native() === null) {
      this.#hot = false
      return
    }
    this.#turnEnd = performance.now()
    this.#host.later(this.#spinTurn)
  }

  /**
   * No core of the machine is free: this side's spinning holds a core that another thread (maybe
   * the peer) waits for. Spinning is off for {@link CROWDED_MS}, then tried again in the retry
   * windows; meanwhile a wait that ended fast does not turn it back on.
   */
  #crowded(): void {
    if (this.#budgetMs > 0) this.#host.log?.('no free core: spinning off for a while')
    this.#budgetMs = 0
    this.#crowdedUntil = performance.now() + CROWDED_MS
  }

  /**
   * A wait ended: `fast`, it was short enough that spinning through it paid off (the peer was
   * running): spin fully again. Otherwise (it ended after the budget, or took long: on a machine
   * with no free core, this side's spinning holds the core its peer needs) halve the budget, and
   * below {@link MIN_BUDGET_MS} stop spinning (until the next retry window).
   */
  #paid(fast: boolean): void {
    if (fast) {
      this.#budgetMs = this.#spinMs
      return
    }
    this.#budgetMs = Math.min(this.#budgetMs, FAST_WAIT_MS) / 2
    if (this.#budgetMs < MIN_BUDGET_MS) {
      if (this.#budgetMs > 0) this.#host.log?.('spinning does not pay off: off for a while')
      this.#budgetMs = 0
    }
  }
}
