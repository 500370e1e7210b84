/**
 * When this side looks at the rings itself instead of waiting to be woken: after something
 * arrived or a request went out, the JS thread polls between turns of the event loop for
 * `spinMicros`, busy-waiting natively (`spin`, at most {@link SPIN_SLICE_MICROS} a turn) only while
 * the loop had nothing else to do; meanwhile the wake-up thread rests (`setDriving(true)`). After
 * `spinMicros` without work it hands back to the wake-up thread (whose side of the strategy is
 * `crates/sharm-core/src/channel/wake.rs`).
 *
 * @internal
 * @packageDocumentation
 */
import { performance } from 'node:perf_hooks'

import type { NativeChannel } from './binding'
import type { Counters } from './stats'

/** A gap between two spin turns longer than this (ms) means the event loop has other work. */
const BUSY_GAP_MS = 0.02
/** Longest busy-wait (µs) in one turn of the event loop. */
const SPIN_SLICE_MICROS = 50

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

  constructor(host: PollHost, stats: Counters, spinMicros: number) {
    this.#host = host
    this.#stats = stats
    this.#spinMs = spinMicros / 1000
  }

  /** Work happened (an arrival, a request, bytes waiting for ring space): poll for a while. */
  heat(): void {
    if (this.#spinMs === 0) return
    this.#active = true
    if (this.#hot) return
    const native = this.#host.native()
    if (native === null || this.#host.paused()) return
    this.#hot = true
    this.#lastWork = this.#turnEnd = performance.now()
    this.#host.log?.(`polling for up to ${this.#spinMs * 1000} µs after the last work`)
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
    const left = this.#spinMs - (t - this.#lastWork)
    let work = true
    try {
      work = native.spin(othersBusy ? 0 : Math.max(0, Math.min(SPIN_SLICE_MICROS, Math.ceil(left * 1000))))
    } catch {
      // closed or broken: the drain below reports it
    }
    if (work) {
      this.#stats.spinHits++
      this.#active = true
      this.#host.drain()
    } else if (left <= 0) {
      // Quiet for spinMicros: hand over to the wake-up thread, which looks at once.
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
}
