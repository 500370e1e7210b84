// ch.messages(): the async iterator of send-and-forget messages, with a real second process.
import test from 'ava'

import { AbortError, Channel, ClosedError } from '../index'
import { channelKit, killAllPeers, leftoverSegments, spawnPeer, spawnPeerAs, uniqueName } from './helpers'

const PREFIX = 'iter'
const { opened, open, pair } = channelKit(PREFIX)

/** Sender settings that make its queue fill quickly: a 4 KiB ring and a 4 KiB queue. */
const SMALL = { capacity: 4096, maxQueueBytes: 4096 }

test('an iterator that is not read stops reading, so the sender sees false and then drain once it is read', async (t) => {
  const { ch, peer } = await pair('echo', SMALL)
  const it = ch.messages({ highWaterMark: 8 })
  // Nobody reads the iterator: the peer fills our ring and its own queue, and send returns false.
  const full = await peer.cmd({ op: 'sendUntilFull', bytes: 64 })
  t.true(full.full)
  const sent: number = full.sent
  t.true(sent > 8, `the peer got ${sent} messages out before its queue was full`)
  // Still nothing read: the peer stays refused (no 'drain' comes), and this side holds at most
  // what the ring held when it stopped reading, far below what was sent.
  const early = await Promise.race([peer.next(), new Promise((r) => setTimeout(() => r('no drain'), 300))])
  t.is(early, 'no drain')
  t.true(ch.stats().received.messages < sent, `${ch.stats().received.messages} of ${sent} read while paused`)
  // Reading the iterator lets everything through, in order, and the peer gets 'drain'.
  const drained = peer.next()
  let n = 0
  for await (const m of it) {
    t.is(m.readUInt32LE(0), n, 'in order')
    if (++n === sent) break
  }
  t.like(await drained, { drained: true, sent })
  await peer.close()
  await ch.close()
})

test("answers to this side's requests are not held back behind unread messages", async (t) => {
  // A 4 KiB ring; the peer's queue takes what the ring does not (its default maxQueueBytes).
  const { ch, peer } = await pair('echo', SMALL, { capacity: 4096 })
  const it = ch.messages({ highWaterMark: 4 })
  const strings = Array.from({ length: 500 }, (_, i) => `${String(i).padStart(4, '0')} ${'x'.repeat(60)}`)
  await peer.cmd({ op: 'sendStrings', strings })
  await new Promise((r) => setTimeout(r, 100))
  const whilePaused = ch.stats().received.messages
  t.true(whilePaused < strings.length, `${whilePaused} of ${strings.length} read while paused`)
  // The ring is full of unread messages and the answer will lie behind them, and still it comes.
  const answer = await ch.request('still answered', { timeoutMs: 10_000 })
  t.is(answer.toString(), 'still answered')
  // The messages were kept for the iterator meanwhile, none lost.
  const got: string[] = []
  for await (const m of it) {
    got.push(m.toString())
    if (got.length === strings.length) break
  }
  t.deepEqual(got, strings)
  await peer.close()
  await ch.close()
})

test("'message' listeners and every iterator get each message; close ends the iteration after what it holds", async (t) => {
  const { ch, peer } = await pair('echo', {}, {})
  const heard: string[] = []
  ch.on('message', (m) => heard.push(m.toString()))
  const a = ch.messages()
  const b = ch.messages()
  await peer.cmd({ op: 'sendStrings', strings: ['one', 'two', 'three'] })
  const gotA: string[] = []
  for await (const m of a) {
    gotA.push(m.toString())
    if (gotA.length === 3) break
  }
  t.deepEqual(gotA, ['one', 'two', 'three'])
  // b was not read: it still holds all three, and close ends it after them.
  await ch.close()
  const gotB: string[] = []
  for await (const m of b) gotB.push(m.toString())
  t.deepEqual(gotB, ['one', 'two', 'three'])
  t.deepEqual(heard, ['one', 'two', 'three'])
  // An iterator asked for after close ends at once.
  const after = await ch.messages().next()
  t.true(after.done)
  await peer.close()
})

test('an abort ends the iteration with an AbortError carrying the reason, as events.on does', async (t) => {
  const { ch, peer } = await pair('echo')
  const ac = new AbortController()
  const got: string[] = []
  const loop = (async () => {
    for await (const m of ch.messages({ signal: ac.signal })) {
      got.push(m.toString())
      if (got.length === 2) ac.abort(new Error('enough'))
    }
  })()
  await peer.cmd({ op: 'sendStrings', strings: ['a', 'b', 'c'] })
  const err = await t.throwsAsync(loop, { instanceOf: AbortError })
  t.is(err!.code, 'ABORT_ERR')
  t.is((err!.cause as Error).message, 'enough')
  t.deepEqual(got, ['a', 'b'])
  // An iterator with a signal aborted already throws at once, and the channel reads on.
  const before = new AbortController()
  before.abort()
  await t.throwsAsync(ch.messages({ signal: before.signal }).next(), { instanceOf: AbortError })
  t.is((await ch.request('ok')).toString(), 'ok')
  await peer.close()
  await ch.close()
})

test("Channel.once and Channel.on are events.once and events.on: a peer's connect info, then its messages", async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name)
  const joined = Channel.once(ch, 'connect')
  const peer = await spawnPeer(name, 'echo')
  const [info] = await joined
  t.is(info.pid, peer.child.pid ?? -1)
  t.true(Number.isInteger(info.generation))
  const ac = new AbortController()
  const got: string[] = []
  const loop = (async () => {
    for await (const [data] of Channel.on(ch, 'message', { signal: ac.signal })) {
      got.push(data.toString())
      if (got.length === 2) ac.abort()
    }
  })()
  await peer.cmd({ op: 'sendStrings', strings: ['a', 'b'] })
  await t.throwsAsync(loop, { name: 'AbortError' })
  t.deepEqual(got, ['a', 'b'])
  // An 'error' before the event rejects, as events.once does.
  const waiting = Channel.once(ch, 'drain')
  const err = new ClosedError('test')
  ch.emit('error', err)
  t.is(await t.throwsAsync(waiting), err)
  await peer.close()
  await ch.close()
})

test('a waiting next() settles when the channel closes', async (t) => {
  const { ch, peer } = await pair('echo')
  const it = ch.messages()
  const waiting = it.next()
  await ch.close()
  t.deepEqual(await waiting, { value: undefined, done: true })
  t.throws(() => ch.send('x'), { instanceOf: ClosedError })
  await peer.close()
})

test('strings are sent as UTF-8 by send, request, requestSync, answer and requestStream', async (t) => {
  const name = `${PREFIX}-${process.pid}-strings`
  const ch = open(name, {
    onRequest: (data, ctx) => {
      ctx.answerLater()
      setImmediate(() => ch.answer(ctx.id, `réponse à ${data.toString()}`))
    },
  })
  const peer = await spawnPeerAs({ env: { ...process.env, SHARM_PEER_TEXTS: '1' } } as never, name, 'echo')
  await ch.waitForPeer(5000)
  t.is((await ch.request('héllo ✓')).toString('utf8'), 'héllo ✓')
  t.is(ch.requestSync('sync ✓').toString('utf8'), 'sync ✓')
  t.true(ch.send('message ✓'))
  t.true(ch.send(''))
  const texts: string[] = []
  while (texts.length < 2) {
    texts.push(...(await peer.cmd({ op: 'lastMessages' })).texts)
    await new Promise((r) => setTimeout(r, 10))
  }
  t.deepEqual(texts, ['message ✓', ''])
  t.like(await peer.cmd({ op: 'request', data: 'q' }), { answer: 'réponse à q' })
  // The stream's request data 'gen:5' reaches the peer's onStream as text: it answers 5 bytes.
  const chunks: Buffer[] = []
  for await (const c of ch.requestStream('gen:5')) chunks.push(c)
  t.is(Buffer.concat(chunks).length, 5)
  await peer.close()
  await ch.close()
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(PREFIX), [])
})
