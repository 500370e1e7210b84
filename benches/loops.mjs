// The measuring loops, run by the bench process and by its peer alike.
import { createHistogram } from 'node:perf_hooks'
import { setImmediate as tick } from 'node:timers/promises'

export const now = () => process.hrtime.bigint() // CLOCK_MONOTONIC: comparable across processes

/** The end of a send-and-forget run: one empty message, after all the counted ones. */
export const END = Buffer.alloc(0)

/** How many messages a sender writes before it lets its own event loop run (full duplex needs it). */
const YIELD_EVERY = 1024

/**
 * Sends `payload` for `ms` milliseconds, then the END marker. Waits whenever the transport says
 * its queue is full. Returns the count sent and the start time.
 */
export async function pump(t, payload, ms, sendTakesOnFalse) {
  const start = now()
  const stop = start + BigInt(Math.round(ms * 1e6))
  let sent = 0
  for (;;) {
    for (let i = 0; i < YIELD_EVERY; i++) {
      if (t.send(payload)) sent++
      else {
        if (sendTakesOnFalse) sent++
        await t.drain()
      }
    }
    if (now() >= stop) break
    await tick()
  }
  while (!t.send(END)) {
    if (sendTakesOnFalse) break
    await t.drain()
  }
  return { sent, startNs: start }
}

/** Counts received messages until the END marker; resolves with the count and the time it came. */
export function counter() {
  let count = 0
  let resolve
  const done = new Promise((r) => (resolve = r))
  return {
    onMessage: (d) => {
      if (d.length === 0) resolve({ count, atNs: now() })
      else count++
    },
    done,
  }
}

/** Keeps `inflight` requests going for `ms` milliseconds. Returns calls answered and elapsed ns. */
export function rpcLoop(t, payload, inflight, ms) {
  return new Promise((resolve, reject) => {
    const start = now()
    const stop = start + BigInt(Math.round(ms * 1e6))
    let calls = 0
    let out = 0
    let stopping = false
    const one = () => {
      out++
      t.request(payload).then(onAnswer, reject)
    }
    const onAnswer = () => {
      out--
      calls++
      if (!stopping && (calls & 255) === 0 && now() >= stop) stopping = true
      if (!stopping) one()
      else if (out === 0) resolve({ calls, elapsedNs: now() - start })
    }
    for (let i = 0; i < inflight; i++) one()
  })
}

/** How long (ms) each round of a sequential scenario makes the same calls before it measures. */
export const SEQ_WARM_UP_MS = 300

/**
 * One request at a time for `ms` milliseconds. Returns the calls made, the time they took and a
 * histogram of the round trips (perf_hooks, in ns: `histogram.percentile(99)`).
 */
export async function sequential(t, payload, ms) {
  const histogram = createHistogram()
  const start = now()
  const stop = start + BigInt(Math.round(ms * 1e6))
  let t0 = start
  let calls = 0
  while (t0 < stop) {
    await t.request(payload)
    const t1 = now()
    histogram.record(t1 - t0 > 0n ? t1 - t0 : 1n)
    calls++
    t0 = t1
  }
  return { histogram, calls, elapsedNs: t0 - start }
}

/**
 * `loops` async functions, each awaiting `call(payload)` again and again for `ms` milliseconds: the
 * way users write pipelined calls (`for (;;) await ch.request(b)` in many loops at once). Returns
 * the calls made and the time they took.
 */
export async function asyncLoops(call, payload, loops, ms) {
  const start = now()
  const stop = start + BigInt(Math.round(ms * 1e6))
  let calls = 0
  const loop = async () => {
    for (let n = 1; ; n++) {
      await call(payload)
      calls++
      // A look at the clock every 64 calls: a clock read per call would cost more than some calls.
      if ((n & 63) === 0 && now() >= stop) return
    }
  }
  await Promise.all(Array.from({ length: loops }, loop))
  return { calls, elapsedNs: now() - start }
}
