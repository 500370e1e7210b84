import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import test from 'ava'

import {
  BusyError,
  ClosedError,
  PeerGoneError,
  QueueFullError,
  RemoteError,
  TimeoutError,
  TooLargeError,
  type Channel,
} from '../index'
import { channelKit, killAllPeers, leftThisProcess, leftoverSegments, spawnPeer, uniqueName } from './helpers'

const PREFIX = 'rpc'

const { opened, open, pair } = channelKit(PREFIX)

async function done(ch: Channel, peer: { close(): Promise<void> }) {
  await peer.close()
  await ch.close()
}

test('a request to another process resolves with its answer', async (t) => {
  const { ch, peer } = await pair('echo')
  const answer = await ch.request(Buffer.from('hello over shared memory'))
  t.is(answer.toString(), 'hello over shared memory')
  await done(ch, peer)
})

test('10,000 concurrent requests are all answered with their own data', async (t) => {
  const { ch, peer } = await pair('echo')
  const all = []
  for (let i = 0; i < 10_000; i++) all.push(ch.request(Buffer.from(`request number ${i}`)))
  const answers = await Promise.all(all)
  t.is(answers.length, 10_000)
  t.true(answers.every((a, i) => a.toString() === `request number ${i}`))
  t.is(ch.pendingRequests, 0)
  await done(ch, peer)
})

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
function pattern(len: number): Buffer {
  const b = Buffer.allocUnsafe(len)
  let x = len ^ 0x9e3779b9
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    b[i] = x >>> 24
  }
  return b
}

for (const [label, len] of [
  ['0 B', 0],
  ['1 B', 1],
  ['1 MiB', 1 << 20],
  ['64 MiB', 64 << 20],
] as const) {
  test(`a ${label} payload crosses a 64 KiB ring both ways byte-exact`, async (t) => {
    const { ch, peer } = await pair('echo', { capacity: 64 * 1024 })
    t.is(ch.capacity, 64 * 1024)
    const data = pattern(len)
    const answer = await ch.request(data, { timeoutMs: 60_000 })
    t.is(answer.length, len)
    t.is(sha(answer), sha(data))
    await done(ch, peer)
  })
}

test('100,000 send-and-forget messages arrive complete and in order', async (t) => {
  const { ch, peer } = await pair('sink', { capacity: 256 * 1024 })
  const N = 100_000
  let sent = 0
  while (sent < N) {
    const b = Buffer.alloc(16)
    b.writeUInt32LE(sent, 0)
    if (ch.send(b)) sent++
    else await new Promise((r) => setImmediate(r))
  }
  let report: any
  for (;;) {
    report = await peer.cmd({ op: 'report' })
    if (report.received >= N) break
    await new Promise((r) => setTimeout(r, 20))
  }
  t.is(report.received, N)
  t.is(report.outOfOrder, 0)
  t.is(report.bytesReceived, N * 16)
  await done(ch, peer)
})

test('requestSync blocks until the peer answers', (t) =>
  pair('echo').then(async ({ ch, peer }) => {
    const r = ch.requestSync(Buffer.from('sync call'), { timeoutMs: 5000 })
    t.is(r.toString(), 'sync call')
    const big = pattern(3 << 20)
    t.is(sha(ch.requestSync(big, { timeoutMs: 10_000 })), sha(big))
    await done(ch, peer)
  }))

test('a handler that answers later with ctx.answerLater() and ch.answer() resolves the request', async (t) => {
  const { ch, peer } = await pair('later')
  t.is((await ch.request(Buffer.from('x'))).toString(), 'later:x')
  await done(ch, peer)
})

test('a handler that throws rejects the request with ERR_SHARM_REMOTE and its message', async (t) => {
  const { ch, peer } = await pair('throw')
  const err = await t.throwsAsync(ch.request(Buffer.from('abc')), {
    instanceOf: RemoteError,
  })
  t.is(err!.code, 'ERR_SHARM_REMOTE')
  t.is((err as RemoteError).remoteMessage, 'handler exploded on 3 bytes')
  await done(ch, peer)
})

test('a handler that answers with something other than bytes rejects the request with ERR_SHARM_REMOTE', async (t) => {
  const { ch, peer } = await pair('string')
  const err = await t.throwsAsync(ch.request(Buffer.from('?')), { instanceOf: RemoteError })
  t.regex(
    (err as RemoteError).remoteMessage,
    /handler answered with a string \("not bytes"\), expected a Buffer or Uint8Array/,
  )
  await done(ch, peer)
})

test('a request nobody answers rejects with ERR_SHARM_TIMEOUT after its timeout', async (t) => {
  const { ch, peer } = await pair('silent')
  const started = Date.now()
  const err = await t.throwsAsync(ch.request(Buffer.from('?'), { timeoutMs: 200 }), { instanceOf: TimeoutError })
  t.is(err!.code, 'ERR_SHARM_TIMEOUT')
  t.true(Date.now() - started >= 190)
  t.is(ch.pendingRequests, 0)
  await done(ch, peer)
})

test('3,000 requests nobody answers, made over three ticks among answered ones, time out in the order they were made, none before its timeout', async (t) => {
  const { ch, peer } = await pair('cancel')
  const TIMEOUT = 300
  const order: number[] = []
  const early: string[] = []
  const waits: Promise<unknown>[] = []
  const answered: Promise<Buffer>[] = []
  for (let tick = 0; tick < 3; tick++) {
    for (let i = 0; i < 1000; i++) {
      const n = tick * 1000 + i
      const made = performance.now()
      waits.push(
        ch.request(Buffer.from('hang'), { timeoutMs: TIMEOUT }).then(
          () => t.fail(`request ${n} was answered`),
          (e) => {
            t.true(e instanceof TimeoutError, `request ${n}: ${e}`)
            order.push(n)
            const after = performance.now() - made
            if (after < TIMEOUT) early.push(`request ${n} after ${after.toFixed(1)} ms`)
          },
        ),
      )
      // Answered ones between them: the waiting ones are passed by later ids.
      if (i % 10 === 0) answered.push(ch.request(Buffer.from(`echo ${n}`)))
    }
    await new Promise((r) => setImmediate(r))
  }
  t.deepEqual(
    (await Promise.all(answered)).map((b) => b.toString()),
    Array.from({ length: 300 }, (_, k) => `echo ${Math.floor(k / 100) * 1000 + (k % 100) * 10}`),
  )
  await Promise.all(waits)
  t.deepEqual(early, [])
  t.deepEqual(
    order,
    Array.from({ length: 3000 }, (_, n) => n),
  )
  t.is(ch.pendingRequests, 0)
  await done(ch, peer)
})

test('requests made before the peer attached are delivered when it does', async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name)
  const early = [ch.request(Buffer.from('early 1')), ch.request(Buffer.from('early 2'))]
  t.false(ch.connected)
  const peer = await spawnPeer(name, 'echo')
  t.deepEqual(
    (await Promise.all(early)).map((b) => b.toString()),
    ['early 1', 'early 2'],
  )
  await done(ch, peer)
})

test('a full queue makes send return false and request reject with ERR_SHARM_QUEUE_FULL', async (t) => {
  const ch = open(uniqueName(PREFIX), { maxQueueBytes: 10_000 })
  // No peer: everything waits in the queue.
  let accepted = 0
  while (ch.send(Buffer.alloc(1000))) accepted++
  t.is(accepted, 10)
  t.is(ch.queuedBytes, 10_000)
  const err = await t.throwsAsync(ch.request(Buffer.alloc(10)), {
    instanceOf: QueueFullError,
  })
  t.is(err!.code, 'ERR_SHARM_QUEUE_FULL')
  t.false(ch.send(Buffer.alloc(1)))
  await ch.close()
})

test('a message over maxMessageBytes is refused with ERR_SHARM_TOO_LARGE', async (t) => {
  const ch = open(uniqueName(PREFIX), { maxMessageBytes: 100 })
  t.throws(() => ch.send(Buffer.alloc(101)), {
    instanceOf: TooLargeError,
    message: /101 bytes.*maxMessageBytes \(100\)/,
  })
  await t.throwsAsync(ch.request(Buffer.alloc(101)), {
    instanceOf: TooLargeError,
  })
  t.true(ch.send(Buffer.alloc(100)))
  await ch.close()
})

test('a third process gets ERR_SHARM_BUSY', async (t) => {
  const { name, ch, peer } = await pair('echo')
  const third = await spawnPeer(name, 'echo')
  t.is(third.hello.openError?.code, 'ERR_SHARM_BUSY')
  t.regex(third.hello.openError?.message, /both sides are held by live processes/)
  t.is((await ch.request(Buffer.from('still fine'))).toString(), 'still fine')
  t.true(new BusyError('x') instanceof Error)
  await done(ch, peer)
})

test('close rejects pending requests with ERR_SHARM_CLOSED and every later call throws it', async (t) => {
  const { ch, peer } = await pair('silent')
  const pending = ch.request(Buffer.from('never answered'))
  const closing = ch.close()
  t.is(ch.close(), closing, 'closing twice returns the same promise')
  const err = await t.throwsAsync(pending, { instanceOf: ClosedError })
  t.is(err!.code, 'ERR_SHARM_CLOSED')
  await closing
  t.throws(() => ch.send(Buffer.from('x')), { instanceOf: ClosedError })
  t.throws(() => ch.requestSync(Buffer.from('x')), { instanceOf: ClosedError })
  t.throws(() => ch.answer(1, Buffer.from('x')), { instanceOf: ClosedError })
  // The promise-returning ones reject instead of throwing, so a .catch() attached at once sees it.
  const caught: unknown[] = []
  await ch.request(Buffer.from('x')).catch((e: unknown) => caught.push(e))
  await ch.waitForPeer().catch((e: unknown) => caught.push(e))
  await ch.waitForPeer(100).catch((e: unknown) => caught.push(e))
  t.is(caught.length, 3)
  for (const e of caught) t.true(e instanceof ClosedError)
  // ref()/unref() after close do nothing, as a socket's.
  t.false(ch.hasRef())
  t.is(ch.ref(), ch)
  t.is(ch.unref(), ch)
  t.false(ch.hasRef())
  t.true(ch.closed)
  await peer.close()
})

test('the peer sees disconnect when this side closes, and connect when it comes back', async (t) => {
  const { name, ch, peer } = await pair('echo')
  const gone = once(ch, 'disconnect')
  await peer.close()
  const [info] = await gone
  t.false(ch.connected)
  t.is(typeof info.unconfirmed, 'number')
  const back = once(ch, 'connect')
  const peer2 = await spawnPeer(name, 'echo')
  await back
  t.is((await ch.request(Buffer.from('again'))).toString(), 'again')
  await done(ch, peer2)
})

// Serial: it measures how soon the death is noticed, which other tests' load would blur.
test.serial('a request to a killed peer rejects with ERR_SHARM_PEER_GONE within a second', async (t) => {
  const { ch, peer } = await pair('silent')
  const pending = ch.request(Buffer.from('lost'), { timeoutMs: 30_000 })
  const rejected = t.throwsAsync(pending, { instanceOf: PeerGoneError })
  await leftThisProcess(ch)
  await peer.kill()
  const dead = Date.now()
  const err = await rejected
  t.is(err!.code, 'ERR_SHARM_PEER_GONE')
  t.true(Date.now() - dead < 1000, `took ${Date.now() - dead} ms after the peer was gone`)
  await ch.close()
})

test('requestSync on both sides at once ends in two timeouts, and both channels still work', async (t) => {
  // This side blocks in requestSync; the peer's handler for that request blocks in a requestSync
  // back at this side and never answers. Neither can answer the other: both time out. This side
  // then stays blocked (reading the peer's report from a file, without its event loop) until the
  // peer's requestSync has ended, so the outcome does not depend on how the two are scheduled.
  const reportFile = path.join(mkdtempSync(path.join(tmpdir(), 'sharmipc-sync-')), 'peer-result')
  const name = uniqueName(PREFIX)
  const ch = open(name, { onRequest: (d: Buffer) => d })
  const peer = await spawnPeer(name, 'sync-back', { reportFile })
  await ch.waitForPeer(5000)
  t.throws(() => ch.requestSync(Buffer.from('500'), { timeoutMs: 3000 }), { instanceOf: TimeoutError })
  while (!existsSync(reportFile));
  t.is(readFileSync(reportFile, 'utf8'), 'ERR_SHARM_TIMEOUT')
  t.is((await ch.request(Buffer.from('after'))).toString(), 'after')
  t.deepEqual(await peer.cmd({ op: 'request', data: 'from peer', timeoutMs: 20_000 }), { answer: 'from peer' })
  await done(ch, peer)
})

test("bad arguments throw at once (or reject, for promises) with what was expected and Node's code", async (t) => {
  const TYPE = 'ERR_INVALID_ARG_TYPE'
  const VALUE = 'ERR_INVALID_ARG_VALUE'
  const RANGE = 'ERR_OUT_OF_RANGE'
  t.throws(() => open(42 as unknown as string), {
    instanceOf: TypeError,
    code: TYPE,
    message: /name must be a string, got number 42/,
  })
  t.throws(() => open(''), { instanceOf: RangeError, code: VALUE, message: /1 to 128 bytes/ })
  t.throws(() => open('has/slash'), { instanceOf: RangeError, code: VALUE, message: /may contain only/ })
  t.throws(() => open('x'.repeat(129)), { instanceOf: RangeError, code: VALUE })
  const name = uniqueName(PREFIX)
  t.throws(() => open(name, { capacity: 5000 }), {
    instanceOf: RangeError,
    code: VALUE,
    message: /power of two, got 5000/,
  })
  t.throws(() => open(name, { capacity: 1024 }), { instanceOf: RangeError, code: RANGE, message: /from 4096/ })
  t.throws(() => open(name, { capacity: 4096.5 }), { instanceOf: RangeError, code: RANGE })
  t.throws(() => open(name, { capacity: '4096' as never }), { instanceOf: TypeError, code: TYPE })
  t.throws(() => open(name, { timeoutMs: -1 }), { instanceOf: RangeError, code: RANGE, message: /timeoutMs/ })
  t.throws(() => open(name, { onRequest: 'nope' as never }), {
    instanceOf: TypeError,
    code: TYPE,
    message: /onRequest must be a function/,
  })
  t.throws(() => open(name, { capcity: 4096 } as never), {
    instanceOf: TypeError,
    code: VALUE,
    message: /unknown option "capcity"/,
  })
  t.throws(() => open(name, null as never), { instanceOf: TypeError, code: TYPE })
  const ch = open(name)
  t.throws(() => ch.send(42 as never), {
    instanceOf: TypeError,
    code: TYPE,
    message: /Buffer, a Uint8Array or a string, got number 42/,
  })
  t.throws(() => ch.messages({ highWaterMark: 0 }), { instanceOf: RangeError, code: RANGE })
  t.throws(() => ch.messages({ signal: 'x' as never }), { instanceOf: TypeError, code: TYPE })
  // Promise-returning methods never throw: the error comes through the promise.
  let bad!: Promise<Buffer>
  t.notThrows(() => {
    bad = ch.request([1, 2] as never)
  })
  await t.throwsAsync(bad, { instanceOf: TypeError, code: TYPE, message: /got an array/ })
  let zero!: Promise<Buffer>
  t.notThrows(() => {
    zero = ch.request(Buffer.alloc(1), { timeoutMs: 0 })
  })
  await t.throwsAsync(zero, { instanceOf: RangeError, code: RANGE })
  await t.throwsAsync(ch.request(Buffer.alloc(1), { signal: {} as never }), { instanceOf: TypeError, code: TYPE })
  await t.throwsAsync(ch.waitForPeer(-5), { instanceOf: RangeError, code: RANGE })
  t.throws(() => ch.answer(12345, Buffer.alloc(1)), {
    instanceOf: RangeError,
    code: VALUE,
    message: /no request with id/,
  })
  t.throws(() => ch.answer(1.5, Buffer.alloc(1)), { instanceOf: RangeError, code: VALUE })
  t.true(ch.send(new Uint8Array([1, 2, 3])), 'a plain Uint8Array is accepted')
  t.true(ch.send('a string is sent as UTF-8'), 'a string is accepted')
  return ch.close()
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
