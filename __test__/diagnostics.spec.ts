// What sharmipc tells a user who looks for a cause: error messages that say why, NODE_DEBUG
// output, and a peer in another PID namespace.
import { once } from 'node:events'

import test from 'ava'

import { TimeoutError } from '../index'
import {
  channelKit,
  killAllPeers,
  leftoverSegments,
  runSide,
  spawnPeer,
  spawnPeerInPidNamespace,
  uniqueName,
} from './helpers'

const PREFIX = 'diag'
const { opened, open } = channelKit(PREFIX)

test('a request on a channel that never had a peer says so, naming the channel and the timeout', async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name)
  const err = await t.throwsAsync(ch.request('anyone?', { timeoutMs: 150 }), { instanceOf: TimeoutError })
  t.regex(err!.message, new RegExp(`channel "${name}" within 150 ms`))
  t.regex(err!.message, /no peer has attached to this channel since it was opened/)
  const sync = t.throws(() => ch.requestSync('anyone?', { timeoutMs: 100 }), { instanceOf: TimeoutError })
  t.regex(sync!.message, new RegExp(`requestSync on channel "${name}" within 100 ms: no peer has attached`))
  const wait = await t.throwsAsync(ch.waitForPeer(100), { instanceOf: TimeoutError })
  t.regex(wait!.message, new RegExp(`no peer attached to channel "${name}" within 100 ms: no peer has attached`))
  await ch.close()
})

test('a request whose peer left says that the peer left, not that there never was one', async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name)
  const peer = await spawnPeer(name, 'echo')
  await ch.waitForPeer(5000)
  const gone = once(ch, 'disconnect')
  await peer.close()
  await gone
  const err = await t.throwsAsync(ch.request('anyone?', { timeoutMs: 150 }), { instanceOf: TimeoutError })
  t.regex(err!.message, /within 150 ms: the peer left and no other has attached/)
  await ch.close()
})

test('hasRef() follows ref() and unref(), and is false once closed', async (t) => {
  const ch = open(uniqueName(PREFIX))
  t.true(ch.hasRef())
  t.false(ch.unref().hasRef())
  t.true(ch.ref().hasRef())
  await ch.close()
  t.false(ch.hasRef())
  ch.ref()
  t.false(ch.hasRef(), 'ref() after close does nothing')
})

const root = process.getuid?.() === 0
const pidNamespaceTest = root ? test : test.skip
pidNamespaceTest('a peer in another PID namespace is named as such, with the Docker hint, on both sides', async (t) => {
  const name = uniqueName(PREFIX)
  // The peer in its own PID namespace (its pid there is 1) creates the channel first.
  const peer = await spawnPeerInPidNamespace(name, 'echo')
  t.true(peer.hello.ready, JSON.stringify(peer.hello))
  // This side cannot see it: pid 1 here is another process, started before it. It takes the
  // side for dead, replaces the segment, and then says why no peer comes.
  const ch = open(name)
  const err = await t.throwsAsync(ch.request('hello?', { timeoutMs: 300 }), { instanceOf: TimeoutError })
  t.regex(err!.message, /held by pid 1, which from here is another process that started before it/)
  t.regex(err!.message, /runs in another PID namespace/)
  t.regex(err!.message, /--pid=container:<id>/)
  // The peer finds its side taken and says that processes in different PID namespaces do that.
  let report: any
  for (let i = 0; i < 100; i++) {
    report = await peer.cmd({ op: 'report' })
    if (report.lastError !== null) break
    await new Promise((r) => setTimeout(r, 20))
  }
  t.is(report.lastError?.code, 'ERR_SHARM_PROTOCOL')
  t.regex(report.lastError?.message, /different PID namespaces/)
  t.regex(report.lastError?.message, /--pid=container:<id>/)
  await ch.close()
  await peer.kill()
})

/** Runs helpers/debug-side.ts on a new channel with `env`, against an echo peer; resolves with its stderr. */
async function debugRun(env: NodeJS.ProcessEnv): Promise<{ stderr: string; code: number | null }> {
  const name = uniqueName(PREFIX)
  const { out, exited, until } = runSide('debug-side.ts', [name], env)
  await until('ready')
  const peer = await spawnPeer(name, 'echo')
  await until('done')
  await peer.close()
  const [code] = (await exited) as [number | null]
  return { stderr: out.stderr, code }
}

test('NODE_DEBUG=sharmipc logs attach, peers with pids and generations, wake-ups or polling, queue full and drain', async (t) => {
  const { stderr, code } = await debugRun({ ...process.env, NODE_DEBUG: 'sharmipc' })
  t.is(code, 0, stderr)
  const lines = stderr.split('\n').filter((l) => l.startsWith('SHARMIPC '))
  const has = (re: RegExp) =>
    t.true(
      lines.some((l) => re.test(l)),
      `no line matches ${re}:\n${stderr}`,
    )
  has(/attach diag-\S+: side 0, generation \d+, segment \/sharm\.\S+, capacity 4096, pid \d+, peer none yet/)
  has(/peer attached: generation \d+, pid \d+/)
  has(/woken by the wake-up thread|polling for up to \d+ µs/)
  has(/queue full, send refused \(\d+ bytes waiting\)/)
  has(/queue drained/)
  has(/peer left: generation \d+, pid \d+, 0 undelivered, 0 in doubt/)
})

test('without NODE_DEBUG nothing is logged', async (t) => {
  const env = { ...process.env }
  delete env.NODE_DEBUG
  const { stderr, code } = await debugRun(env)
  t.is(code, 0, stderr)
  t.is(stderr, '')
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(PREFIX), [])
})
