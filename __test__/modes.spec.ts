// Polling modes (spinMicros, latencyMode), the send buffer that batches small messages per tick,
// and the 'drain' event, each against a real second process.
import { once } from 'node:events'

import test from 'ava'

import { channelKit, killAllPeers, leftoverSegments, spawnPeer, uniqueName } from './helpers'

const PREFIX = 'modes'

const { opened, open, pair } = channelKit(PREFIX)

/** A message carrying its sequence number in its first 4 bytes (the peer checks the order). */
function numbered(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size, seq & 0xff)
  b.writeUInt32LE(seq, 0)
  return b
}

/** Asks the peer for its counters until it has `n` messages (or 20 s pass). */
async function peerHas(peer: Awaited<ReturnType<typeof spawnPeer>>, n: number) {
  const until = Date.now() + 20_000
  for (;;) {
    const r = await peer.cmd({ op: 'report' })
    if (r.received >= n || Date.now() > until) return r
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

for (const [label, options] of [
  ['latencyMode', { latencyMode: true }],
  ['spinMicros: 0 (always sleep)', { spinMicros: 0 }],
  ['default polling', {}],
] as const) {
  test(`${label}: sequential and concurrent requests and ordered messages both ways`, async (t) => {
    const { ch, peer } = await pair('echo', { ...options, onRequest: (d: Buffer) => d }, options)
    for (let i = 0; i < 500; i++) {
      const a = await ch.request(Buffer.from(`seq ${i}`))
      if (a.toString() !== `seq ${i}`) t.fail(`answer ${i} was ${a.toString()}`)
    }
    const all = await Promise.all(Array.from({ length: 2000 }, (_, i) => ch.request(Buffer.from(`par ${i}`))))
    t.true(all.every((a, i) => a.toString() === `par ${i}`))
    for (let i = 0; i < 20_000; i++) t.true(ch.send(numbered(i, 8 + (i % 64))) || t.fail(`send ${i} refused`))
    const r = await peerHas(peer, 20_000)
    t.is(r.received, 20_000)
    t.is(r.outOfOrder, 0)
    t.deepEqual(await peer.cmd({ op: 'request', data: 'from the peer', timeoutMs: 5000 }), {
      answer: 'from the peer',
    })
    await peer.close()
    await ch.close()
  })
}

test('small messages (batched per tick) and large ones (sent at once) keep their order', async (t) => {
  const { ch, peer } = await pair('echo', { capacity: 64 * 1024 })
  const sizes = [4, 100, 4096, 4097, 70_000, 8, 300_000, 12]
  let bytes = 0
  for (let i = 0; i < 3000; i++) {
    const size = sizes[i % sizes.length]
    bytes += size
    while (!ch.send(numbered(i, size))) await once(ch, 'drain')
  }
  const r = await peerHas(peer, 3000)
  t.is(r.received, 3000)
  t.is(r.outOfOrder, 0)
  t.is(r.bytesReceived, bytes)
  await peer.close()
  await ch.close()
})

test("'drain' follows a refused send once the queue is empty, and nothing accepted is lost", async (t) => {
  const { ch, peer } = await pair('echo', { maxQueueBytes: 64 * 1024, capacity: 16 * 1024 })
  let refused = 0
  let drains = 0
  ch.on('drain', () => drains++)
  const n = 100_000
  for (let i = 0; i < n; i++) {
    while (!ch.send(numbered(i, 100))) {
      refused++
      await once(ch, 'drain')
      t.is(ch.queuedBytes, 0, "the queue is empty at 'drain'")
    }
  }
  t.true(refused > 0, 'the queue filled up at least once')
  t.true(drains >= refused)
  const r = await peerHas(peer, n)
  t.is(r.received, n)
  t.is(r.outOfOrder, 0)
  await peer.close()
  await ch.close()
})

test('polling options are checked', (t) => {
  const name = uniqueName(PREFIX)
  t.throws(() => open(name, { latencyMode: 'yes' as unknown as boolean }), {
    instanceOf: TypeError,
    message: /latencyMode must be a boolean, got a string \("yes"\)/,
  })
  t.throws(() => open(name, { spinMicros: -1 }), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: /spinMicros/,
  })
  // As Node's own checks: a number that is not an integer is out of range, another type is a TypeError.
  t.throws(() => open(name, { spinMicros: 1.5 }), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
    message: /spinMicros must be an integer/,
  })
  t.throws(() => open(name, { spinMicros: '5' as never }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.deepEqual(leftoverSegments(name), [])
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
