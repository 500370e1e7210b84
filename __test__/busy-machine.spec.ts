// A machine with no free core (Linux): a side stops spinning for its peer, since every spin holds a
// core that another thread waits for, and sleeps on its loop bell instead.
import { availableParallelism } from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import test from 'ava'

import { killAllPeers, leftoverSegments, runSide, spawnPeer, uniqueName } from './helpers'
import { only } from './helpers/platform'

const PREFIX = 'busy'
const linuxTest = only(
  ['linux'],
  'the rule reads /proc/loadavg, /proc/stat and the thread counts of involuntary switches',
)

test.after.always(killAllPeers)

linuxTest.serial(
  'with more CPU hogs than cores, a side that asks one request after another sleeps for its answers instead of spinning',
  async (t) => {
    const N = 3000
    // Hogs of a program other than the bench's, which bench.spec counts while this file may run beside it.
    const { startHogs } = await import(pathToFileURL(path.join(__dirname, '..', 'benches', 'hogs.mjs')).href)
    const hogs = availableParallelism() + 1
    const stopHogs = await startHogs(hogs, { program: 'while (true) {}' })
    try {
      const name = uniqueName(PREFIX)
      // The side under test logs its changes of strategy (NODE_DEBUG); it has the default spin budget.
      const side = runSide('busy-side.ts', [name, `${N}`], { ...process.env, NODE_DEBUG: 'sharmipc' })
      await side.until('ready')
      const peer = await spawnPeer(name, 'echo')
      const [code] = await side.exited
      await peer.close()
      const { stdout, stderr } = side.out
      t.is(code, 0, stderr)
      const m = /answered (\d+), woken (\d+) times, found (\d+) by polling/.exec(stdout)
      t.truthy(m, stdout)
      const [answered, woken, polled] = m!.slice(1).map(Number)
      const stops = stderr.split('\n').filter((l) => l.includes('no free core: spinning off')).length
      t.log(
        `${N} requests with ${hogs} hogs: woken ${woken} times, ${polled} found by polling; spinning stopped ${stops} times for no free core`,
      )
      t.is(answered, N)
      // The machine had more runnable threads than cores throughout: the rule for that fired.
      t.true(stops >= 1, `spinning never stopped for no free core (${woken} woken, ${polled} found by polling)`)
      // A side that spun through its answers would find nearly all of them by polling and hardly
      // be woken; one that stops spinning (no free core, or spinning did not pay off) is woken for
      // most. Polling still finds the answers that come back within a turn of the event loop.
      t.true(
        woken >= N / 4,
        `the event loop was woken ${woken} times for ${N} answers, ${polled} were found by polling`,
      )
    } finally {
      await stopHogs()
    }
    t.deepEqual(leftoverSegments(PREFIX), [])
  },
)
