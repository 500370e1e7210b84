// A peer that leaves (killed with SIGKILL, or closing) while traffic runs: what was accepted is
// delivered or handed back, requests fail only with the peer they went to, and connection events
// come in order. The peers log what they did with synchronous writes, so their logs survive the
// kill (see helpers/restart-peer.ts).
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import test, { type ExecutionContext } from 'ava'

import { open, PeerGoneError, type DisconnectInfo } from '../index'
import { inspectSegment } from '../lib/segments'
import { killAllPeers, uniqueName } from './helpers'
import { only, patience, rounds } from './helpers/platform'

// These tests freeze the receiver with SIGSTOP, which Windows has not.
const posixTest = only(['linux', 'darwin'], 'these tests freeze the receiver with SIGSTOP, which Windows has not')
const linuxTest = only(['linux'], "it watches the peer's slot in the segment, which only Linux shows")

const PREFIX = 'departure'
const script = path.join(__dirname, 'helpers', 'restart-peer.ts')
const dir = mkdtempSync(path.join(tmpdir(), 'sharmipc-departure-'))
const live = new Set<ChildProcess>()

test.after.always(async () => {
  for (const c of live) c.kill('SIGKILL')
  await killAllPeers()
  rmSync(dir, { recursive: true, force: true })
})

interface RestartPeer {
  child: ChildProcess
  log: string
  /** Tells it to open the channel; resolves once it did. */
  open(): Promise<void>
  kill(): void
  exited: Promise<unknown>
}

/** Starts a peer that waits to be told to open `name` (it logs into a file of its own). */
async function startPeer(name: string, closeAfterConnectMs?: number): Promise<RestartPeer> {
  const log = path.join(dir, `${name}-${live.size}-${Math.random().toString(36).slice(2)}.log`)
  const args = [name, log, ...(closeAfterConnectMs === undefined ? [] : [String(closeAfterConnectMs)])]
  const child = fork(script, args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  live.add(child)
  const exited = once(child, 'close')
  void exited.then(() => live.delete(child))
  await once(child, 'message')
  return {
    child,
    log,
    exited,
    open: async () => {
      const opened = once(child, 'message')
      child.send({ op: 'open' })
      await opened
    },
    kill: () => void child.kill('SIGKILL'),
  }
}

/** What a peer's log says it ran (`R`) and delivered (`M`). */
function readLog(file: string): { ran: string[]; delivered: number[] } {
  const ran: string[] = []
  const delivered: number[] = []
  let text = ''
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    // it never opened
  }
  for (const line of text.split('\n')) {
    if (line.startsWith('R ')) ran.push(line.slice(2))
    if (line.startsWith('M ')) delivered.push(Number(line.slice(2)))
  }
  return { ran, delivered }
}

/** Is process `pid` running (not gone, not a zombie)? Read without the event loop. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3))
  } catch {
    return false
  }
}

/** Keeps the event loop busy for `ms` (a survivor with synchronous work in hand). */
function busyFor(ms: number): void {
  const end = Date.now() + ms
  while (Date.now() < end) {
    // spin
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Waits (with the event loop running) until `done()` holds; fails after `ms` naming `what`. */
async function until(what: string, ms: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(10)
  }
}

/**
 * Ends a test whose last process may have been killed: the next open of the name finds no live
 * side, removes the stale segment and creates a fresh one, which its close removes.
 */
async function reclaim(t: ExecutionContext, name: string, segment: string): Promise<void> {
  await open(name).close()
  t.false(existsSync(`/dev/shm${segment}`), `segment ${segment} left behind`)
}

/** How many times the tests below SIGKILL a peer and start another. */
const KILLS = rounds(20, 5)

test('a request made while the peer is killed and replaced is answered by the new peer or fails with the old one, never both', async (t) => {
  t.timeout(patience(170_000))
  const name = uniqueName(PREFIX)
  const ch = open(name, { timeoutMs: patience(20_000) })
  const generationOf = new Map<number, number>() // pid -> generation
  ch.on('connect', ({ generation, pid }) => generationOf.set(pid, generation))
  let departed = 0 // generation of the last departure, for the rejections it causes
  ch.on('disconnect', (info: DisconnectInfo) => (departed = info.generation))
  const outcomes = new Map<string, { ok: boolean; wrong?: boolean; generation?: number; reached?: string }>()
  let running = true
  let seq = 0
  const loops = Array.from({ length: 8 }, async () => {
    while (running) {
      const id = `q${seq++}`
      try {
        const answer = await ch.request(Buffer.from(id))
        outcomes.set(id, { ok: true, wrong: answer.toString() !== id })
      } catch (e) {
        if (!(e instanceof PeerGoneError)) throw e
        outcomes.set(id, { ok: false, generation: departed, reached: e.reached })
        await sleep(1)
      }
    }
  })
  let peer = await startPeer(name)
  await peer.open()
  const logs = [peer.log]
  const pids = [peer.child.pid!]
  for (let cycle = 0; cycle < KILLS; cycle++) {
    await sleep(100 + Math.random() * 200)
    const next = await startPeer(name)
    logs.push(next.log)
    pids.push(next.child.pid!)
    // Kill, let the new one open at once, and keep this side busy meanwhile every other cycle.
    peer.kill()
    const opened = next.open()
    if (cycle % 2 === 0) busyFor(300)
    await opened
    peer = next
  }
  await sleep(300)
  running = false
  await Promise.all(loops)
  const ranBy = new Map<string, number[]>() // request id -> pids whose handler got it
  logs.forEach((log, i) => {
    for (const id of readLog(log).ran) ranBy.set(id, [...(ranBy.get(id) ?? []), pids[i]])
  })
  let failed = 0
  let bothFailedAndRun = 0
  let unsentButRun = 0
  for (const [id, o] of outcomes) {
    t.false(o.wrong ?? false, `request ${id} got another request's answer`)
    if (o.ok) continue
    failed++
    for (const pid of ranBy.get(id) ?? []) {
      // It may have run only on the peer that left (the one it failed with).
      if (generationOf.get(pid) !== o.generation) bothFailedAndRun++
      if (o.reached === 'no') unsentButRun++
    }
  }
  t.log(`${outcomes.size} requests, ${failed} failed with the peer they went to, ${KILLS} kills`)
  t.is(bothFailedAndRun, 0, 'a request that failed with a peer ran on another one')
  t.is(unsentButRun, 0, 'a request said to have never reached the peer ran')
  t.true(outcomes.size > 100)
  peer.kill()
  await peer.exited
  const segment = ch.segmentName
  await ch.close()
  await reclaim(t, name, segment)
})

test('a peer that leaves before the newcomer’s first turn gives connect then disconnect, and leaves it disconnected', async (t) => {
  const name = uniqueName(PREFIX)
  // The peer closes 50 ms after it sees us attach; we stay busy for longer than that.
  const peer = await startPeer(name, 50)
  await peer.open()
  const ch = open(name)
  const events: string[] = []
  ch.on('connect', ({ generation }) => events.push(`connect ${generation}`))
  ch.on('disconnect', ({ generation }) => events.push(`disconnect ${generation}`))
  ch.on('error', (e) => events.push(`error ${e.message}`))
  // Busy (no turn of the event loop) until the peer has closed and exited: it leaves before our
  // first turn, however slowly it runs.
  const deadline = Date.now() + 30_000
  while (running(peer.child.pid!) && Date.now() < deadline) busyFor(10)
  t.false(running(peer.child.pid!), 'the peer exited while this side was busy')
  await until('both events', 30_000, () => events.length >= 2)
  await sleep(200) // nothing more comes
  t.is(events.length, 2, events.join(', '))
  t.regex(events[0], /^connect \d+$/)
  t.is(events[1], events[0].replace('connect', 'disconnect'))
  t.false(ch.connected)
  await t.throwsAsync(ch.waitForPeer(300), { code: 'ERR_SHARM_TIMEOUT' })
  await peer.exited
  const segment = ch.segmentName
  await ch.close()
  await reclaim(t, name, segment)
})

linuxTest(
  'a peer that attaches, sends and is killed while this side is busy gives connect, its messages, then disconnect',
  async (t) => {
    const name = uniqueName(PREFIX)
    const ch = open(name)
    const peerSide = () => inspectSegment(name)?.sides.find((s) => s.pid !== process.pid)
    const events: string[] = []
    ch.on('connect', ({ generation, pid }) => events.push(`connect ${generation} pid ${pid}`))
    ch.on('message', (m: Buffer) => events.push(`message ${m.readUInt32LE(0)}`))
    ch.on('disconnect', ({ generation }) => events.push(`disconnect ${generation}`))
    ch.on('error', (e) => events.push(`error ${e.message}`))
    const peer = await startPeer(name)
    const pid = peer.child.pid!
    // Its whole life (attach, three messages, SIGKILL, its slot freed by this side's wake-up
    // thread) falls between two turns of this side's event loop: busy until its slot is free again.
    peer.child.send({ op: 'send-and-die', count: 3 })
    const deadline = Date.now() + 30_000
    while (!(peerSide()?.generation === 1 && peerSide()?.state === 'free') && Date.now() < deadline) busyFor(10)
    t.false(running(pid), 'the peer died while this side was busy')
    t.like(peerSide(), { generation: 1, state: 'free' }, 'its slot was freed while this side was busy')
    await until('the disconnect', 30_000, () => events.some((e) => e.startsWith('disconnect')))
    await sleep(200) // nothing more comes
    // Its pid went with its slot before this side looked at it: 0.
    t.deepEqual(events, ['connect 1 pid 0', 'message 0', 'message 1', 'message 2', 'disconnect 1'])
    t.false(ch.connected)
    await peer.exited
    const segment = ch.segmentName
    await ch.close()
    await reclaim(t, name, segment)
  },
)

test(`every accepted message is delivered or handed back through ${KILLS} SIGKILLs of the receiver`, async (t) => {
  t.timeout(patience(170_000))
  const name = uniqueName(PREFIX)
  const ch = open(name, { capacity: 64 * 1024 })
  const handedBack = new Set<number>()
  const inDoubt = new Set<number>()
  let partial = 0
  const collect = (info: { undelivered: Buffer[]; inDoubt: Buffer[] }) => {
    for (const b of info.undelivered) handedBack.add(b.readUInt32LE(0))
    for (const b of info.inDoubt) inDoubt.add(b.readUInt32LE(0))
  }
  ch.on('disconnect', (info: DisconnectInfo) => {
    collect(info)
    partial += info.unconfirmed - info.undelivered.length - info.inDoubt.length
  })
  ch.on('error', (e) => {
    if (e instanceof PeerGoneError) collect(e)
    else throw e
  })
  let accepted = 0
  let running = true
  const sender = (async () => {
    while (running) {
      const b = Buffer.alloc(8 + (accepted % 200))
      b.writeUInt32LE(accepted, 0)
      if (ch.send(b)) {
        accepted++
        if (accepted % 64 === 0) await new Promise((r) => setImmediate(r))
      } else {
        await once(ch, 'drain')
      }
    }
  })()
  const logs: string[] = []
  let peer = await startPeer(name)
  logs.push(peer.log)
  await peer.open()
  for (let cycle = 0; cycle < KILLS; cycle++) {
    await sleep(100 + Math.random() * 300)
    const next = await startPeer(name)
    logs.push(next.log)
    peer.kill()
    await next.open()
    peer = next
  }
  running = false
  await sender
  // The last receiver stays: close waits until it delivered everything (or hands back the rest).
  await sleep(200)
  const segment = ch.segmentName
  await ch.close()
  const closing = peer.child.send({ op: 'close' })
  t.true(closing)
  await peer.exited
  const delivered = new Map<number, number>()
  for (const log of logs) for (const n of readLog(log).delivered) delivered.set(n, (delivered.get(n) ?? 0) + 1)
  let missing = 0
  let both = 0
  let twice = 0
  for (let n = 0; n < accepted; n++) {
    const d = delivered.get(n) ?? 0
    if (d > 1) twice++
    if (d > 0 && handedBack.has(n)) both++
    if (d === 0 && !handedBack.has(n) && !inDoubt.has(n)) missing++
  }
  t.log(
    `${accepted} accepted, ${delivered.size} delivered, ${handedBack.size} handed back, ${inDoubt.size} in doubt, ${partial} partial, ${KILLS} kills`,
  )
  t.is(missing, 0, 'accepted messages neither delivered nor handed back')
  t.is(both, 0, 'messages handed back as undelivered that were delivered')
  t.is(twice, 0, 'messages delivered twice')
  t.is(partial, 0)
  t.true(handedBack.size + inDoubt.size > 0, 'the kills caught messages in flight')
  await reclaim(t, name, segment)
})

/** Checks the delivery equation: each message delivered once or handed back, never both, none missing. */
function settle(
  accepted: number,
  delivered: Set<number>,
  reports: Array<{ undelivered: Buffer[]; inDoubt: Buffer[] }>,
) {
  const back = new Set<number>()
  const doubt = new Set<number>()
  for (const r of reports) {
    for (const b of r.undelivered) back.add(b.readUInt32LE(0))
    for (const b of r.inDoubt) doubt.add(b.readUInt32LE(0))
  }
  let missing = 0
  let both = 0
  for (let n = 0; n < accepted; n++) {
    if (delivered.has(n) && back.has(n)) both++
    if (!delivered.has(n) && !back.has(n) && !doubt.has(n)) missing++
  }
  return { back, doubt, missing, both }
}

for (const how of ['killed', 'frozen'] as const) {
  posixTest(
    `a closing sender whose receiver is ${how} during the close hands back what was not delivered`,
    async (t) => {
      const name = uniqueName(PREFIX)
      const ch = open(name, { capacity: 64 * 1024 })
      const segment = ch.segmentName
      const peer = await startPeer(name)
      await peer.open()
      await ch.waitForPeer(5000)
      const numbered = (n: number) => {
        const b = Buffer.alloc(64)
        b.writeUInt32LE(n, 0)
        return b
      }
      let accepted = 0
      for (; accepted < 1000; accepted++) ch.send(numbered(accepted))
      // The first thousand reach the receiver's listener, however slowly it runs.
      await until('the first 1000 messages delivered', 30_000, () => readLog(peer.log).delivered.length >= 1000)
      // The receiver stops reading; what follows waits in its ring and in our queue.
      peer.child.kill('SIGSTOP')
      for (; accepted < 100_000; accepted++) t.true(ch.send(numbered(accepted)))
      const reports: Array<{ undelivered: Buffer[]; inDoubt: Buffer[] }> = []
      ch.on('disconnect', (info: DisconnectInfo) => reports.push(info))
      ch.on('error', (e) => reports.push(e as PeerGoneError))
      const closed = ch.close()
      if (how === 'killed') {
        await sleep(100)
        peer.kill()
      }
      await closed
      if (how === 'frozen') {
        // It may read what is in its ring once it runs again: those were reported in doubt.
        peer.child.kill('SIGCONT')
        await sleep(500)
        peer.kill()
      }
      await peer.exited
      const delivered = new Set(readLog(peer.log).delivered)
      const { back, doubt, missing, both } = settle(accepted, delivered, reports)
      t.log(`${accepted} accepted, ${delivered.size} delivered, ${back.size} handed back, ${doubt.size} in doubt`)
      t.true(delivered.size >= 1000)
      t.true(back.size > 0, 'messages not delivered were handed back')
      t.is(missing, 0)
      t.is(both, 0)
      if (how === 'frozen') t.true(doubt.size > 0, 'what was in the ring of a live reader is in doubt')
      await reclaim(t, name, segment)
    },
  )
}
