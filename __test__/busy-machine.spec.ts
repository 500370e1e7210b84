// A machine with no free core (Linux): a side stops spinning for its peer, since every spin holds a
// core that another thread waits for, and sleeps on its loop bell instead.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { availableParallelism } from 'node:os'

import test from 'ava'

import { killAllPeers, leftoverSegments, runSide, spawnPeer, uniqueName } from './helpers'
import { only } from './helpers/platform'

const PREFIX = 'busy'
const linuxTest = only(['linux'], 'the rule reads /proc/loadavg and the thread counts of involuntary switches')

test.after.always(killAllPeers)

/**
 * `n` processes that each spin on a core. Their program differs from the bench's hogs, which
 * bench.spec finds by their command line while this file may run beside it.
 */
async function startHogs(n: number): Promise<ChildProcess[]> {
  const hogs = Array.from({ length: n }, () => spawn(process.execPath, ['-e', 'while (true) {}'], { stdio: 'ignore' }))
  await Promise.all(hogs.map((h) => once(h, 'spawn')))
  return hogs
}

async function stopHogs(hogs: ChildProcess[]): Promise<void> {
  for (const h of hogs) h.kill('SIGKILL')
  await Promise.all(hogs.map((h) => (h.exitCode === null && h.signalCode === null ? once(h, 'exit') : null)))
}

linuxTest.serial(
  'with more CPU hogs than cores, a side that asks one request after another sleeps for its answers instead of spinning',
  async (t) => {
    const N = 3000
    const hogs = await startHogs(availableParallelism() + 1)
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
        `${N} requests with ${hogs.length} hogs: woken ${woken} times, ${polled} found by polling; spinning stopped ${stops} times for no free core`,
      )
      t.is(answered, N)
      // A side that spun through its answers would find nearly all of them by polling and hardly
      // be woken; one that stops spinning (no free core, or spinning did not pay off) is woken for
      // most. Polling still finds the answers that come back within a turn of the event loop.
      t.true(
        woken >= N / 4,
        `the event loop was woken ${woken} times for ${N} answers, ${polled} were found by polling`,
      )
    } finally {
      await stopHogs(hogs)
    }
    t.deepEqual(leftoverSegments(PREFIX), [])
  },
)
