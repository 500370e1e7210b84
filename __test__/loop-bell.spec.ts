// The loop bell (Linux): a side that sleeps is woken in its event loop by the peer's ring, not by
// its wake-up thread; the bell is a FIFO next to the segment and goes with it.
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

import test from 'ava'

import { channelKit, killAllPeers, leftoverSegments } from './helpers'
import { only } from './helpers/platform'

const PREFIX = 'bell'
const { pair } = channelKit(PREFIX)
const linuxTest = only(['linux'], 'the loop bell is a FIFO in /dev/shm, and threads are read from /proc')

test.after.always(killAllPeers)

/** Voluntary context switches of this process's wake-up threads, by thread id. */
function wakeThreads(): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== 'sharmipc-wake') continue
      const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8')
      out.set(tid, Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)![1]))
    } catch {
      // a thread that ended meanwhile
    }
  }
  return out
}

linuxTest(
  'answers that arrive while this side sleeps wake its event loop, not its wake-up thread; the bells go with the channel',
  async (t) => {
    const before = wakeThreads()
    // spinMicros 0: this side never polls by itself, every answer finds it asleep.
    const { ch, peer } = await pair('echo', { spinMicros: 0 }, {})
    const mine = [...wakeThreads().keys()].filter((tid) => !before.has(tid))
    t.is(mine.length, 1, 'one wake-up thread for the channel opened here')
    const bells = ['a', 'b'].map((s) => `/dev/shm/${ch.segmentName.replace(/^\//, '')}@bell-${s}`)
    t.true(
      bells.every((b) => existsSync(b)),
      `a bell for each side: ${bells.join(', ')}`,
    )
    const switches = () => wakeThreads().get(mine[0]) ?? 0
    const start = switches()
    const wakeupsBefore = ch.stats().wakeups
    const N = 200
    const began = Date.now()
    for (let i = 0; i < N; i++) {
      t.is((await ch.request(Buffer.from(`q${i}`))).toString(), `q${i}`)
      await sleep(2) // the peer goes to sleep too
    }
    const ms = Date.now() - began
    const woken = switches() - start
    const wakeups = ch.stats().wakeups - wakeupsBefore
    t.log(`${N} answers in ${ms} ms: ${wakeups} wake-ups of the event loop, wake-up thread woken ${woken} times`)
    t.true(wakeups >= N / 2, `the event loop was woken ${wakeups} times for ${N} answers`)
    // Woken only for its liveness checks (every 100 ms) and a few state changes; through the
    // wake-up thread it would be once per answer at least.
    t.true(woken <= ms / 100 + 20, `the wake-up thread was woken ${woken} times in ${ms} ms`)
    await peer.close()
    await ch.close()
    t.deepEqual(leftoverSegments(PREFIX), [])
  },
)
