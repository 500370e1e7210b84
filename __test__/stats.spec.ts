// ch.stats(): counters checked against what both processes did, under load.
import test from 'ava'

import { channelKit, killAllPeers, leftoverSegments, uniqueName } from './helpers'

const PREFIX = 'stats'
const { opened, open, pair } = channelKit(PREFIX)

test('sent and received counters of both sides agree with what was done, under load', async (t) => {
  const { ch, peer } = await pair('echo')
  const before = ch.stats()
  t.deepEqual(before.sent, { messages: 0, requests: 0, answers: 0, streamFrames: 0, bytes: 0 })
  let messageBytes = 0
  const n = 50_000
  for (let i = 0; i < n; i++) {
    const b = Buffer.alloc(4 + (i % 700))
    b.writeUInt32LE(i, 0)
    messageBytes += b.length
    while (!ch.send(b)) await new Promise<void>((r) => ch.once('drain', () => r()))
  }
  const m = 5000
  let requestBytes = 0
  const all = []
  for (let i = 0; i < m; i++) {
    const d = Buffer.alloc(10 + (i % 300), 1)
    requestBytes += d.length
    all.push(ch.request(d))
  }
  t.is(ch.stats().pendingRequests, m)
  const answers = await Promise.all(all)
  t.is(answers.length, m)
  const mine = ch.stats()
  t.deepEqual(mine.sent, { messages: n, requests: m, answers: 0, streamFrames: 0, bytes: messageBytes + requestBytes })
  t.deepEqual(mine.received, { messages: 0, requests: 0, answers: m, streamFrames: 0, bytes: requestBytes })
  t.is(mine.pendingRequests, 0)
  t.true(mine.batches >= 1 && mine.largestBatch >= 1)
  t.true(mine.wakeups + mine.spinHits >= 1)
  let r: any
  for (let k = 0; k < 200; k++) {
    r = await peer.cmd({ op: 'report' })
    if (r.stats.received.messages === n) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.deepEqual(r.stats.received, {
    messages: n,
    requests: m,
    answers: 0,
    streamFrames: 0,
    bytes: messageBytes + requestBytes,
  })
  t.deepEqual(r.stats.sent, { messages: 0, requests: 0, answers: m, streamFrames: 0, bytes: requestBytes })
  t.is(r.stats.errors, 0)
  t.is(r.outOfOrder, 0)
  await peer.close()
  await ch.close()
})

test('timeouts, queue-full refusals and error answers are counted', async (t) => {
  const { ch, peer } = await pair('silent')
  await t.throwsAsync(ch.request(Buffer.from('x'), { timeoutMs: 50 }))
  t.throws(() => ch.requestSync(Buffer.from('y'), { timeoutMs: 50 }))
  t.is(ch.stats().timeouts, 2)
  await peer.close()
  await ch.close()

  const thrower = await pair('throw')
  await t.throwsAsync(thrower.ch.request(Buffer.from('boom')))
  const s = thrower.ch.stats()
  t.is(s.remoteErrors, 1)
  t.is(s.received.answers, 1)
  await thrower.peer.close()
  await thrower.ch.close()

  const alone = open(uniqueName(PREFIX), { maxQueueBytes: 1000 })
  let refused = 0
  for (let i = 0; i < 50; i++) if (!alone.send(Buffer.alloc(100))) refused++
  await t.throwsAsync(alone.request(Buffer.alloc(100)))
  const q = alone.stats()
  t.is(q.queueFullRejections, refused + 1)
  t.is(q.sent.messages, 50 - refused)
  t.is(q.queuedBytes, (50 - refused) * 100)
  await alone.close().catch(() => {})
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
