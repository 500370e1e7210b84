import { once } from 'node:events'
import {
  closeSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs'

import test from 'ava'

import {
  PeerGoneError,
  ProtocolError,
  TimeoutError,
  open as openChannel,
  type Channel,
  type OpenOptions,
} from '../index'
import {
  killAllPeers,
  leftThisProcess,
  leftoverSegments,
  segmentsOnly,
  spawnPeer,
  spawnUnreapedPeer,
  uniqueName,
} from './helpers'
import { only, patience, rounds } from './helpers/platform'

// These tests write and truncate the segment files in /dev/shm, or leave a peer unreaped through sh.
const linuxTest = only(
  ['linux'],
  'these tests write and truncate the segment files in /dev/shm, or leave a peer unreaped through sh',
)

const PREFIX = 'fail'
const HEADER_BYTES = 4096
const RING_CONTROL_BYTES = 256

const opened = new Set<Channel>()
function open(name: string, options?: OpenOptions): Channel {
  const ch = openChannel(name, options)
  opened.add(ch)
  return ch
}

/** Reads or writes bytes of a channel's segment file, as a hostile process could. */
function segment(ch: Channel) {
  const file = `/dev/shm${ch.segmentName}`
  return {
    read(offset: number, len: number): Buffer {
      const fd = openSync(file, 'r')
      const b = Buffer.alloc(len)
      readSync(fd, b, 0, len, offset)
      closeSync(fd)
      return b
    },
    write(offset: number, bytes: Buffer): void {
      const fd = openSync(file, 'r+')
      writeSync(fd, bytes, 0, bytes.length, offset)
      closeSync(fd)
    },
  }
}

const RESTARTS = rounds(20, 5)
test(`a peer killed and restarted ${RESTARTS} times under traffic never yields a wrong answer`, async (t) => {
  t.timeout(patience(120_000))
  const name = uniqueName(PREFIX)
  const ch = open(name, { timeoutMs: patience(2000) })
  let wrong = 0
  let answered = 0
  let gone = 0
  let seq = 0
  let running = true
  // What stopped a request loop, if anything did: the test fails with it instead of waiting.
  let broke: unknown = null
  // Four request loops keep traffic going through every kill and restart.
  const loops = Array.from({ length: 4 }, async () => {
    try {
      while (running) {
        const payload = `request ${seq++}`
        try {
          const answer = await ch.request(Buffer.from(payload))
          if (answer.toString() === payload) answered++
          else wrong++
        } catch (e) {
          if (e instanceof PeerGoneError || e instanceof TimeoutError) gone++
          else throw e
          if (!ch.connected) await ch.waitForPeer(patience(10_000))
        }
      }
    } catch (e) {
      broke = e
    }
  })
  const within = async (what: string, ms: number, done: () => boolean) => {
    const deadline = Date.now() + ms
    while (!done()) {
      if (broke !== null) throw broke
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  for (let cycle = 0; cycle < RESTARTS; cycle++) {
    const peer = await spawnPeer(name, 'echo')
    await ch.waitForPeer(patience(10_000))
    const before = answered
    await within(`cycle ${cycle}: 50 answers`, patience(30_000), () => answered >= before + 50)
    let disconnected = false
    ch.once('disconnect', () => (disconnected = true))
    await peer.kill()
    await within(`cycle ${cycle}: 'disconnect' of the killed peer`, patience(10_000), () => disconnected)
  }
  const last = await spawnPeer(name, 'echo')
  running = false
  await Promise.all(loops)
  t.is(broke, null)
  t.is(wrong, 0)
  t.true(answered >= RESTARTS * 50, `answered ${answered}`)
  t.log(`${answered} answered, ${gone} failed with PeerGone/Timeout around the kills, 0 wrong`)
  await last.close()
  await ch.close()
})

linuxTest(
  'a killed peer not yet reaped by its parent is gone: its requests reject with ERR_SHARM_PEER_GONE, the name opens again',
  async (t) => {
    const name = uniqueName(PREFIX)
    const ch = open(name)
    const peer = await spawnUnreapedPeer(name, 'silent')
    await ch.waitForPeer(5000)
    const disconnected = once(ch, 'disconnect')
    // The peer never answers; the request may only end by the peer's departure or its own 30 s.
    const asked = Date.now()
    const pending = ch.request(Buffer.from('never answered'), { timeoutMs: 30_000 })
    await leftThisProcess(ch)
    await peer.kill()
    await t.throwsAsync(pending, { instanceOf: PeerGoneError })
    t.true(Date.now() - asked < 15_000, `rejected ${Date.now() - asked} ms after the request: its timeout was not far`)
    await disconnected
    t.false(ch.connected)
    const next = await spawnPeer(name, 'echo')
    t.true(next.hello.ready, `a new process could not open the name: ${JSON.stringify(next.hello)}`)
    t.is((await ch.request(Buffer.from('after the zombie'))).toString(), 'after the zombie')
    await next.close()
    await peer.release()
    await ch.close()
  },
)

/** Starts two peers on a new channel, kills both, and returns the name and its segment's file. */
async function leftBehind(): Promise<{ name: string; file: string }> {
  const name = uniqueName(PREFIX)
  const peers = [await spawnPeer(name, 'echo'), await spawnPeer(name, 'echo')]
  for (const p of peers) if (!p.hello.ready) throw new Error(`a peer could not open: ${JSON.stringify(p.hello)}`)
  for (const p of peers) await p.kill()
  return { name, file: `/dev/shm/sharm.${name}` }
}

linuxTest('a segment left by two killed processes is re-initialised by the next open', async (t) => {
  const { name } = await leftBehind()
  t.deepEqual(segmentsOnly(leftoverSegments(name)).length, 1, 'the killed processes left their segment behind')
  const ch = open(name, { capacity: 8192 })
  t.is(ch.capacity, 8192, 'created afresh with our own capacity')
  const peer = await spawnPeer(name, 'echo')
  t.is((await ch.request(Buffer.from('fresh'))).toString(), 'fresh')
  await peer.close()
  await ch.close()
})

for (const [what, len] of [
  ['below its header page', 100],
  ['through its rings', HEADER_BYTES + 4096],
  ['to nothing', 0],
] as const) {
  linuxTest(`a segment truncated ${what} that no live process holds is replaced by the next open`, async (t) => {
    const { name, file } = await leftBehind()
    truncateSync(file, len)
    const ch = open(name, { capacity: 8192 })
    t.is(ch.capacity, 8192, 'created afresh with our own capacity')
    t.is(statSync(file).size, HEADER_BYTES + 2 * (RING_CONTROL_BYTES + 8192))
    const peer = await spawnPeer(name, 'echo')
    t.is((await ch.request(Buffer.from('whole again'))).toString(), 'whole again')
    await peer.close()
    await ch.close()
  })
}

linuxTest(
  'a truncated segment that a live process holds is refused at once, naming the file, both sizes and the process',
  async (t) => {
    const { name, file } = await leftBehind()
    // Side 0 as held by this process (start time 0: unknown, so the pid alone counts).
    const fd = openSync(file, 'r+')
    const slot = Buffer.alloc(24)
    slot.writeUInt32LE(process.pid, 0)
    slot.writeUInt32LE(2, 4) // ready
    slot.writeUInt32LE(1, 8) // generation
    writeSync(fd, slot, 0, slot.length, 72)
    writeSync(fd, Buffer.from([1, 0, 0, 0]), 0, 4, 28) // the attach word: side 0
    closeSync(fd)
    truncateSync(file, HEADER_BYTES + 4096)
    try {
      const err = t.throws(() => openChannel(name), { instanceOf: ProtocolError })
      t.is(
        err!.message,
        `shared memory ${file} is 8192 bytes, but its ring capacity of 1048576 bytes needs 2101760: it was truncated ` +
          `while process ${process.pid} held it (which dies with SIGBUS when it touches the missing part); ` +
          'open the channel again once it has gone',
      )
    } finally {
      // The segment, and the loop bells of the two killed processes.
      for (const f of leftoverSegments(name)) rmSync(`/dev/shm/${f}`, { force: true })
    }
  },
)

linuxTest('a segment of another layout version is refused with ERR_SHARM_PROTOCOL naming both versions', async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name)
  const seg = segment(ch)
  const original = seg.read(8, 4)
  // The versions this build speaks are the ones it wrote into the header.
  const layout = original.readUInt32LE(0)
  const protocol = seg.read(12, 4).readUInt32LE(0)
  seg.write(8, Buffer.from([7, 0, 0, 0]))
  const err = t.throws(() => openChannel(name), { instanceOf: ProtocolError })
  t.is(
    err!.message,
    `channel segment ${ch.segmentName} has layout version 7 and protocol version ${protocol}; this sharmipc speaks layout ${layout} and protocol ${protocol}`,
  )
  seg.write(8, original)
  await ch.close()
})

linuxTest('garbage under a channel name is refused with ERR_SHARM_PROTOCOL saying what was found', (t) => {
  const name = uniqueName(PREFIX)
  const file = `/dev/shm/sharm.${name}`
  writeFileSync(file, Buffer.concat([Buffer.from('NOTSHARM'), Buffer.alloc(8192, 0xab)]), { mode: 0o600 })
  try {
    const err = t.throws(() => openChannel(name), { instanceOf: ProtocolError })
    t.regex(err!.message, /not a sharmipc channel: found magic "NOTSHARM"/)
  } finally {
    unlinkSync(file)
  }
})

linuxTest(
  'a record with a huge claimed length closes the reader with ERR_SHARM_PROTOCOL, without a crash',
  async (t) => {
    const name = uniqueName(PREFIX)
    const cap = 64 * 1024
    const ch = open(name, { capacity: cap })
    const peer = await spawnPeer(name, 'sink')
    await ch.waitForPeer(5000)
    t.is(ch.capacity, cap)
    // We created the channel, so we are side 0 and write ring 0, which the peer reads.
    const seg = segment(ch)
    const ring = HEADER_BYTES
    const write = seg.read(ring, 8).readBigUInt64LE(0)
    const pos = Number(write % BigInt(cap))
    const header = Buffer.alloc(16)
    header.writeUInt32LE(0xfffffff0, 0) // length: 4 GiB
    header[4] = 4 // a message
    seg.write(ring + RING_CONTROL_BYTES + pos, header)
    const published = Buffer.alloc(8)
    published.writeBigUInt64LE(write + 64n)
    const gone = once(ch, 'disconnect')
    seg.write(ring, published)
    const seen = await Promise.race([gone.then(() => true), new Promise((r) => setTimeout(r, 10_000, false))])
    const report = await peer.cmd({ op: 'report' })
    const ctl = seg.read(ring, RING_CONTROL_BYTES)
    t.true(
      seen,
      `no disconnect within 10 s; the reading side reported ${JSON.stringify(report)}; wrote at ${write}, ` +
        `ring 0 write ${ctl.readBigUInt64LE(0)} read ${ctl.readBigUInt64LE(128)}; ring 1 ` +
        `${seg.read(ring + RING_CONTROL_BYTES + cap, 8).readBigUInt64LE(0)}; slots ${seg.read(64, 128).toString('hex')}`,
    )
    t.is(report.lastError?.code, 'ERR_SHARM_PROTOCOL')
    t.regex(report.lastError?.message, /record claims 4294967280 payload bytes, more than the 16368 a record may carry/)
    t.true(report.closed, 'the reading side closed its channel')
    t.is(peer.child.exitCode, null, 'and is still running')
    await peer.close()
    await ch.close()
  },
)

test.serial(
  'a peer killed in the middle of a 64 MiB exchange: the request rejects within a second, disconnect fires once',
  async (t) => {
    const name = uniqueName(PREFIX)
    const ch = open(name, { capacity: 64 * 1024 })
    const peer = await spawnPeer(name, 'echo')
    await ch.waitForPeer(5000)
    let disconnects = 0
    ch.on('disconnect', () => disconnects++)
    const big = ch.request(Buffer.alloc(64 << 20, 1), { timeoutMs: 60_000 })
    const rejected = t.throwsAsync(big, { instanceOf: PeerGoneError })
    // Let the transfer get going through the 64 KiB ring, then kill the peer mid-way.
    await new Promise((r) => setTimeout(r, 30))
    await peer.kill()
    const dead = Date.now()
    await rejected
    t.true(Date.now() - dead < 1000, `took ${Date.now() - dead} ms after the peer was gone`)
    t.is(disconnects, 1)
    t.false(ch.closed, 'the surviving side keeps its channel')
    const next = await spawnPeer(name, 'echo')
    t.is((await ch.request(Buffer.from('after the kill'))).toString(), 'after the kill')
    t.is(disconnects, 1)
    await next.close()
    await ch.close()
  },
)

// Offsets in the header page (crates/sharm-core/src/layout.rs): the attach word, and the slots of
// side 0 (ours: we create the channel) and side 1 (the peer's), each pid, state, generation, then
// the start time at +16.
const ATTACH = 28
const OWN_SLOT = 72
const PEER_SLOT = 136
/** Above the largest pid Linux ever gives (PID_MAX_LIMIT, 2^22): no process has it. */
const NO_PID = 4_194_305

function u32(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(v >>> 0)
  return b
}

const scribbles: [string, (seg: ReturnType<typeof segment>) => void][] = [
  ['unknown bits in the attach word', (seg) => seg.write(ATTACH, u32(seg.read(ATTACH, 4).readUInt32LE(0) | 0x100))],
  ['a slot state that is not free, attaching or ready', (seg) => seg.write(PEER_SLOT + 4, u32(7))],
  ["the peer's pid replaced by one no process has", (seg) => seg.write(PEER_SLOT, u32(NO_PID))],
  [
    "the peer's start time changed",
    (seg) => {
      const start = seg.read(PEER_SLOT + 16, 8)
      start.writeBigUInt64LE(start.readBigUInt64LE(0) + 1n)
      seg.write(PEER_SLOT + 16, start)
    },
  ],
  ["a pid of 0 in the peer's ready slot", (seg) => seg.write(PEER_SLOT, u32(0))],
  [
    "the peer's generation going back",
    (seg) => seg.write(PEER_SLOT + 8, u32(seg.read(PEER_SLOT + 8, 4).readUInt32LE(0) - 1)),
  ],
  ['our own pid replaced', (seg) => seg.write(OWN_SLOT, u32(NO_PID))],
  [
    'garbage over the attach word and both slots',
    (seg) => seg.write(ATTACH, Buffer.alloc(PEER_SLOT + 64 - ATTACH, 0xa5)),
  ],
]

for (const [what, scribble] of scribbles) {
  linuxTest(`${what} in a live channel's header breaks it with ERR_SHARM_PROTOCOL, not a disconnect`, async (t) => {
    const name = uniqueName(PREFIX)
    const ch = open(name)
    const file = `/dev/shm${ch.segmentName}`
    const peer = await spawnPeer(name, 'silent')
    try {
      await ch.waitForPeer(5000)
      // The peer never answers: the request ends only with the channel.
      const pending = t.throwsAsync(ch.request(Buffer.from('pending'), { timeoutMs: 30_000 }), {
        instanceOf: ProtocolError,
      })
      const seen = new Promise<unknown>((resolve) => {
        ch.on('error', resolve)
        ch.on('disconnect', () => resolve('a disconnect'))
        setTimeout(resolve, 10_000, 'nothing within 10 s').unref()
      })
      scribble(segment(ch))
      const outcome = await seen
      t.true(outcome instanceof ProtocolError, `saw ${outcome}`)
      t.is((outcome as ProtocolError).code, 'ERR_SHARM_PROTOCOL')
      t.regex((outcome as Error).message, /^corrupt channel header in shared memory: /)
      t.log((outcome as Error).message)
      await pending
      t.true(ch.closed)
    } finally {
      await peer.kill()
      await ch.close()
      // What is left of the scribbled segment (nobody removes a corrupt one), with the killed
      // peer's loop bell.
      for (const f of leftoverSegments(name)) rmSync(`/dev/shm/${f}`, { force: true })
    }
  })
}

test('answering an id twice returns false the second time, and the second answer is not sent', async (t) => {
  const name = uniqueName(PREFIX)
  let id = 0
  const ch = open(name, {
    onRequest: (_data, ctx) => {
      id = ctx.answerLater()
    },
  })
  const peer = await spawnPeer(name, 'sink')
  await ch.waitForPeer(5000)
  const asked = peer.cmd({ op: 'request', data: 'q', timeoutMs: 5000 })
  while (id === 0) await new Promise((r) => setTimeout(r, 5))
  t.true(ch.answer(id, Buffer.from('first')))
  t.false(ch.answer(id, Buffer.from('second')))
  t.throws(() => ch.answer(id + 1, Buffer.from('never asked')), {
    instanceOf: RangeError,
    message: /no request with id/,
  })
  t.deepEqual(await asked, { answer: 'first' })
  t.is(ch.stats().sent.answers, 1)
  await peer.close()
  await ch.close()
})

test('sending into a full queue in a tight loop keeps the queue within maxQueueBytes and raises no errors', async (t) => {
  const ch = open(uniqueName(PREFIX), { maxQueueBytes: 1 << 20 })
  let events = 0
  ch.on('error', () => events++)
  const onWarning = () => events++
  process.on('warning', onWarning)
  let accepted = 0
  const chunk = Buffer.alloc(1000)
  for (let i = 0; i < 1_000_000; i++) if (ch.send(chunk)) accepted++
  t.is(accepted, 1048, 'about 1 MiB was taken, the rest refused')
  t.true(ch.queuedBytes <= 1 << 20)
  await new Promise((r) => setImmediate(r))
  process.off('warning', onWarning)
  t.is(events, 0)
  await ch.close().catch(() => {})
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
