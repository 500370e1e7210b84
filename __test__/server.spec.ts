// One server, many client processes: serve() and connect(), with real processes and SIGKILLs.
import { execFile } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { BusyError, connect, open, serve, SharmError, type Channel, type Server } from '../index'
import { killAllPeers, spawnPeer, spawnPeerAs, uniqueName, type Peer, type RunAs } from './helpers'
import { only } from './helpers/platform'
import { cleanSegment, inspectSegment } from '../lib/segments'

const PREFIX = 'srv'
const script = path.join(__dirname, 'helpers', 'server-side.ts')
const startClient = (name: string, options: object = {}): Promise<Peer> => spawnPeer(name, 'client', options, script)
const startServer = (name: string): Promise<Peer> => spawnPeer(name, 'server', {}, script)

test.after.always(killAllPeers)

/** A server in this process that answers `<pid>:<request>`, as server-side.ts does. */
function echoServer(name: string, maxClients?: number): Server {
  return serve(name, { maxClients, onRequest: (data) => Buffer.from(`${process.pid}:${data}`) })
}

/** Waits until `cond()` holds; fails after `ms`. */
async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/**
 * Is the segment of channel or lobby `name` still there? (Linux, where segments are files in
 * /dev/shm; a long name's file is named by a hash, which `inspectSegment` knows.) Elsewhere `false`.
 */
const segmentLeft = (name: string) => process.platform === 'linux' && inspectSegment(name) !== null

/** Threads of this process (Linux). */
const threads = () => readdirSync('/proc/self/task').length

test.serial('16 client processes with 2,000 concurrent requests each all get their own answers', async (t) => {
  const name = uniqueName(PREFIX)
  const linux = process.platform === 'linux'
  const threadsBefore = linux ? threads() : 0
  const server = echoServer(name)
  const connected: number[] = []
  server.on('connection', (_ch, info) => connected.push(info.pid))
  const left: number[] = []
  server.on('disconnect', (_ch, info) => left.push(info.pid))
  try {
    const clients = await Promise.all(Array.from({ length: 16 }, () => startClient(name)))
    for (const c of clients) t.true(c.hello.ready, JSON.stringify(c.hello))
    await Promise.all(clients.map((c) => c.cmd({ op: 'wait', timeoutMs: 20_000 })))
    const results = await Promise.all(clients.map((c) => c.cmd({ op: 'burst', n: 2000, k: 2000 })))
    for (const r of results) t.deepEqual(r, { right: 2000, wrong: 0, failures: {} })
    const pids = clients.map((c) => c.child.pid!).sort()
    t.deepEqual([...connected].sort(), pids)
    t.is(server.clients.length, 16)
    if (linux) {
      // The lobby's thread and the one that does the wake-up work of every client's channel.
      t.is(threads() - threadsBefore, 2, 'threads the server started for itself and its 16 clients')
    }
    await Promise.all(clients.map((c) => c.close()))
    // 'disconnect' comes once the server closed that client's channel (the last side out removes it).
    await until(() => left.length === 16, 'the server saw every client leave')
    t.is(server.clients.length, 0)
    t.deepEqual([...left].sort(), pids)
    for (const c of clients) t.false(segmentLeft(c.hello.channel), `${c.hello.channel} was removed`)
  } finally {
    await server.close()
  }
  t.false(segmentLeft(name), 'the last one out removed the lobby')
})

test.serial(
  '4 of 16 clients killed mid-traffic: the others go on without an error, what the server asked of the dead fails with PEER_GONE, and their places are freed and taken again',
  async (t) => {
    const name = uniqueName(PREFIX)
    let served = 0
    const server = serve(name, {
      onRequest: (data) => {
        served++
        return Buffer.from(`${process.pid}:${data}`)
      },
    })
    const byPid = new Map<number, { channel: Channel; place: number }>()
    server.on('connection', (channel, { pid, place }) => byPid.set(pid, { channel, place }))
    try {
      // The doomed never answer the server's requests: they are in flight when they die.
      const doomed = await Promise.all(Array.from({ length: 4 }, () => startClient(name, { silent: true })))
      const living = await Promise.all(Array.from({ length: 12 }, () => startClient(name)))
      const clients = [...doomed, ...living]
      await Promise.all(clients.map((c) => c.cmd({ op: 'wait', timeoutMs: 20_000 })))
      const asked = doomed.flatMap((c) =>
        Array.from({ length: 3 }, () =>
          byPid
            .get(c.child.pid!)!
            .channel.request(Buffer.from('never answered'), { timeoutMs: 120_000 })
            .then(
              () => 'answered',
              (e: SharmError) => e.code,
            ),
        ),
      )
      const bursts = living.map((c) => c.cmd({ op: 'burst', n: 3000, k: 64 }))
      for (const c of doomed) void c.cmd({ op: 'burst', n: 1_000_000, k: 64 })
      await until(() => served > 4000, 'traffic before the kills')
      await Promise.all(doomed.map((c) => c.kill()))
      const killedAt = Date.now()
      for (const r of await Promise.all(bursts)) t.deepEqual(r, { right: 3000, wrong: 0, failures: {} })
      t.deepEqual(new Set(await Promise.all(asked)), new Set(['ERR_SHARM_PEER_GONE']))
      await until(() => server.clients.length === 12, 'the killed clients freed')
      t.log(`the killed clients' places were freed ${Date.now() - killedAt} ms after the kills (or less)`)
      for (const c of doomed) {
        await until(() => !segmentLeft(c.hello.channel), `${c.hello.channel} removed`)
      }
      // The freed places are taken again.
      const freed = doomed.map((c) => byPid.get(c.child.pid!)!.place).sort()
      const more = await Promise.all(Array.from({ length: 4 }, () => startClient(name)))
      await Promise.all(more.map((c) => c.cmd({ op: 'wait', timeoutMs: 20_000 })))
      t.deepEqual(more.map((c) => byPid.get(c.child.pid!)!.place).sort(), freed)
      for (const r of await Promise.all(more.map((c) => c.cmd({ op: 'burst', n: 200, k: 8 })))) {
        t.deepEqual(r, { right: 200, wrong: 0, failures: {} })
      }
      t.is(server.clients.length, 16)
      await Promise.all([...living, ...more].map((c) => c.close()))
    } finally {
      await server.close()
    }
  },
)

test.serial(
  'the server killed: pending requests fail fast with PEER_GONE, and the clients connect to the next server by themselves',
  async (t) => {
    const name = uniqueName(PREFIX)
    const first = await startServer(name)
    t.true(first.hello.ready, JSON.stringify(first.hello))
    const clients: Channel[] = [connect(name), connect(name), connect(name)]
    try {
      await Promise.all(clients.map((c) => c.waitForPeer(10_000)))
      const answer = await clients[0].request(Buffer.from('before'))
      t.is(answer.toString(), `${first.child.pid}:before`)
      // Requests in flight when it dies (timeouts far beyond the test's length).
      const inFlight = clients.flatMap((c) =>
        Array.from({ length: 200 }, (_, i) =>
          c.request(Buffer.from(`r${i}`), { timeoutMs: 120_000 }).then(
            () => 'answered',
            (e: SharmError) => e.code,
          ),
        ),
      )
      const reconnected = clients.map((c) => new Promise<void>((resolve) => c.once('connect', () => resolve())))
      await first.kill()
      const outcomes = await Promise.all(inFlight)
      const codes = new Set(outcomes)
      codes.delete('answered')
      t.deepEqual([...codes], ['ERR_SHARM_PEER_GONE'], `outcomes: ${[...new Set(outcomes)]}`)
      const second = await startServer(name)
      t.true(second.hello.ready, JSON.stringify(second.hello))
      await Promise.all(reconnected)
      for (const c of clients) {
        t.is((await c.request(Buffer.from('after'))).toString(), `${second.child.pid}:after`)
      }
      t.deepEqual(await second.cmd({ op: 'clients' }), { clients: 3 })
      await second.close()
    } finally {
      await Promise.all(clients.map((c) => c.close()))
    }
    for (const c of clients) t.false(segmentLeft(c.name), `${c.name} was removed`)
    t.false(segmentLeft(name), 'the lobby was removed')
  },
)

test.serial('a client past maxClients gets ERR_SHARM_BUSY saying so, and the others are not disturbed', async (t) => {
  const name = uniqueName(PREFIX)
  const server = echoServer(name, 2)
  const a = connect(name)
  const b = connect(name)
  try {
    const e = t.throws(() => connect(name), { instanceOf: BusyError })
    t.regex(e!.message, /has its maxClients \(2\) clients/)
    for (const c of [a, b]) {
      await c.waitForPeer(5000)
      t.is((await c.request(Buffer.from('x'))).toString(), `${process.pid}:x`)
    }
    t.is(server.clients.length, 2)
    await a.close()
    await until(() => server.clients.length === 1, 'the server saw a leave')
    const c = connect(name)
    await c.waitForPeer(5000)
    t.is((await c.request(Buffer.from('y'))).toString(), `${process.pid}:y`)
    await c.close()
  } finally {
    await b.close()
    await server.close()
  }
})

test.serial('a flooding client does not starve a latency-sensitive one', async (t) => {
  const name = uniqueName(PREFIX)
  const server = echoServer(name)
  try {
    const [flooder, quiet] = await Promise.all([startClient(name), startClient(name)])
    await Promise.all([flooder, quiet].map((c) => c.cmd({ op: 'wait', timeoutMs: 20_000 })))
    t.deepEqual(await flooder.cmd({ op: 'flood' }), { flooding: true })
    // One request at a time, each given 10 s: a starved client times out.
    const r = await quiet.cmd({ op: 'burst', n: 500, k: 1, timeoutMs: 10_000 })
    const flood = flooder.next()
    flooder.child.send({ op: 'stop' })
    const { answered } = await flood
    t.deepEqual(r, { right: 500, wrong: 0, failures: {} })
    t.true(answered > 500, `the flood kept going: ${answered} answered`)
    await Promise.all([flooder.close(), quiet.close()])
  } finally {
    await server.close()
  }
})

test('a second server of a name is refused; a server name is not a channel, nor a channel a server', async (t) => {
  const name = uniqueName(PREFIX)
  const server = echoServer(name)
  try {
    const e = t.throws(() => serve(name), { instanceOf: BusyError })
    t.regex(e!.message, new RegExp(`server "${name}" is served already, by process ${process.pid}`))
    t.throws(() => open(name), {
      message: /is a server's lobby \(serve\(\) and connect\(\)\), not a two-party channel/,
    })
  } finally {
    await server.close()
  }
  const ch = open(name)
  try {
    t.throws(() => connect(name), { message: /is a two-party channel \(opened with open\(\)\), not a server's lobby/ })
    t.throws(() => serve(name), { message: /is a two-party channel/ })
  } finally {
    await ch.close()
  }
  t.throws(() => serve(name, { maxClients: 0 }), {
    instanceOf: RangeError,
    message: 'maxClients must be from 1 to 1024, got 0',
  })
  t.throws(() => serve(name, { maxClients: '8' as unknown as number }), {
    instanceOf: TypeError,
    message: 'maxClients must be an integer, got a string ("8")',
  })
  t.throws(() => serve(`${'n'.repeat(120)}`), { message: /a server name is at most 112 bytes/ })
  t.false(segmentLeft(name))
})

const linuxTest = only(['linux'], 'it finds what is left in /dev/shm')

linuxTest(
  'when the server and its clients are all SIGKILLed, the next one in frees their places and removes their channels; so does `sharmipc clean`',
  async (t) => {
    for (const next of ['server', 'clean'] as const) {
      const name = uniqueName(PREFIX)
      const server = await startServer(name)
      const clients = await Promise.all([startClient(name), startClient(name)])
      await Promise.all(clients.map((c) => c.cmd({ op: 'wait', timeoutMs: 20_000 })))
      await Promise.all([server.kill(), ...clients.map((c) => c.kill())])
      t.true(segmentLeft(name), 'the lobby outlived them')
      for (const c of clients) t.true(segmentLeft(c.hello.channel), `${c.hello.channel} outlived them`)
      if (next === 'server') {
        // A new server frees the dead clients' places (and removes their channels), then the lobby
        // goes with it.
        const s = echoServer(name)
        await until(() => clients.every((c) => !segmentLeft(c.hello.channel)), 'the dead clients’ channels removed')
        t.is(s.clients.length, 0)
        await s.close()
      } else {
        t.is(cleanSegment(name).result, 'removed')
        for (const c of clients) t.false(segmentLeft(c.hello.channel), `${c.hello.channel} removed with the lobby`)
      }
      t.false(segmentLeft(name), `the lobby removed (${next})`)
    }
  },
)

const IS_ROOT = process.platform === 'linux' && process.getuid?.() === 0
const asRoot = IS_ROOT ? test.serial : test.serial.skip
const NOBODY: RunAs = { uid: 65534, gid: 65534 }

asRoot(
  `two users: another user's client cannot take a place in a default (0600) lobby, and in a 0666 one it can, its channel created 0666 too${IS_ROOT ? '' : ' [skipped: needs root, to run a client as user nobody]'}`,
  async (t) => {
    const name = uniqueName(PREFIX)
    const closed = echoServer(name)
    try {
      const refused = await spawnPeerAs(NOBODY, name, 'client', {}, script)
      t.is(refused.hello.openError?.code, 'ERR_SHARM_OS', JSON.stringify(refused.hello))
      t.regex(refused.hello.openError.message, /permission denied opening shared memory .* belongs to another user/)
      t.is(closed.clients.length, 0)
    } finally {
      await closed.close()
    }
    const shared = serve(name, { mode: 0o666, onRequest: (data) => Buffer.from(`${process.pid}:${data}`) })
    try {
      t.is(statSync(`/dev/shm${shared.segmentName}`).mode & 0o777, 0o666)
      const client = await spawnPeerAs(NOBODY, name, 'client', {}, script)
      t.true(client.hello.ready, JSON.stringify(client.hello))
      await client.cmd({ op: 'wait', timeoutMs: 20_000 })
      t.deepEqual(await client.cmd({ op: 'burst', n: 100, k: 4 }), { right: 100, wrong: 0, failures: {} })
      t.is(inspectSegment(client.hello.channel)!.mode & 0o777, 0o666)
      await client.close()
    } finally {
      await shared.close()
    }
  },
)

test('await using closes a server; unref() lets a process with a server or a client end by itself, which leaves nothing behind', async (t) => {
  const name = uniqueName(PREFIX)
  {
    await using server = echoServer(name)
    t.false(server.closed)
    t.true(segmentLeft(name) || process.platform !== 'linux')
  }
  t.false(segmentLeft(name), 'the block closed the server')
  const facade = JSON.stringify(require.resolve('../index'))
  // A server and a client, each in a process that does nothing more once they are connected.
  const program = (role: string) => `
    const { serve, connect } = require(${facade})
    const x = ${role === 'server' ? `serve(${JSON.stringify(name)})` : `connect(${JSON.stringify(name)})`}
    x.on('${role === 'server' ? 'connection' : 'connect'}', () => { x.unref(); console.log('unref') })`
  const run = (role: string) =>
    promisify(execFile)(process.execPath, ['--import', 'tsx', '-e', program(role)], { timeout: 60_000 })
  const [server, client] = await Promise.all([run('server'), run('client')])
  t.is(server.stdout.trim(), 'unref')
  t.is(client.stdout.trim(), 'unref')
  t.false(segmentLeft(name), 'the lobby went with them')
})

test.serial(
  'a client started before its server waits for it, answers the server too, and 200 idle clients cost the server no thread each',
  async (t) => {
    const name = uniqueName(PREFIX)
    // Before any server: the client's channel waits for one, as open() does.
    const early = connect(name, { onRequest: (data) => Buffer.from(`client:${data}`) })
    try {
      const connected = early.waitForPeer(20_000)
      const linux = process.platform === 'linux'
      const threadsBefore = linux ? threads() : 0
      const server = echoServer(name, 256)
      let idle: Peer[] = []
      try {
        await connected
        t.is((await early.request(Buffer.from('a'))).toString(), `${process.pid}:a`)
        // The server asks the client through the client's channel.
        await until(() => server.clients.length === 1, 'the server saw the early client')
        t.is((await server.clients[0].request(Buffer.from('b'))).toString(), 'client:b')
        // 200 more, in 4 processes, connected and idle.
        idle = await Promise.all(Array.from({ length: 4 }, () => spawnPeer(name, 'idle', { count: 50 }, script)))
        for (const p of idle) t.deepEqual(p.hello, { ready: true })
        await until(() => server.clients.length === 201, 'the server saw 201 clients', 30_000)
        if (linux) t.is(threads() - threadsBefore, 2, 'threads the server started for itself and its 201 clients')
        t.is((await early.request(Buffer.from('c'))).toString(), `${process.pid}:c`)
        await Promise.all(idle.map((p) => p.close()))
        await until(() => server.clients.length === 1, 'the idle clients left', 30_000)
      } finally {
        // Closed, not killed, when the test failed on the way: killed clients of a closed server
        // would leave their channels behind.
        await Promise.all(idle.map((p) => p.close()))
        await server.close()
      }
    } finally {
      await early.close()
    }
    t.false(segmentLeft(name))
  },
)
