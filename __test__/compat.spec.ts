// sharmipc/compat: the SharmIpc class shaped like the .NET original, against a real second
// process (helpers/compat-peer.ts, or the native peer.ts) over real shared memory.
import path from 'node:path'

import test from 'ava'

import { SharmIpc, SharmNpc, PipeRole, type RequestResult, type SharmIpcOptions } from '../compat'
import { Channel, ClosedError, PeerGoneError, RemoteError, TimeoutError } from '../index'
import { killAllPeers, leftoverSegments, spawnPeer, uniqueName, type Peer } from './helpers'

const PREFIX = 'compat'
const compatPeer = path.join(__dirname, 'helpers', 'compat-peer.ts')
const instances = new Set<SharmIpc>()

function make(name: string, handler: any, options?: SharmIpcOptions): SharmIpc {
  const sm = new SharmIpc(name, handler, options)
  instances.add(sm)
  return sm
}

/** Waits until the instance sees a peer (the compat class itself has no waitForPeer). */
async function attached(sm: SharmIpc): Promise<void> {
  await sm.channel.waitForPeer(5000)
}

/** Our SharmIpc plus a compat peer process of `mode`, attached to each other. */
async function pair(
  mode: string,
  handler: any = (d: Buffer) => [true, d],
  options: SharmIpcOptions = {},
  peerOptions: object = {},
): Promise<{ sm: SharmIpc; peer: Peer; name: string }> {
  const name = uniqueName(PREFIX)
  const sm = make(name, handler, options)
  const peer = await spawnPeer(name, mode, peerOptions, compatPeer)
  await attached(sm)
  return { sm, peer, name }
}

const codeOf = (r: RequestResult) => (r[2] as { code?: string } | undefined)?.code

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  // Peers first: a side that closes after its peer was killed is the last one out and removes
  // the segment.
  await killAllPeers()
  await Promise.all([...instances].map((sm) => sm.dispose()))
  let left: string[] = []
  for (let i = 0; i < 50; i++) {
    left = leftoverSegments(`${PREFIX}-${process.pid}-`)
    if (left.length === 0) break
    await new Promise((r) => setTimeout(r, 50))
  }
  t.deepEqual(left, [])
})

test("the handler's form follows its parameter count, and handlerForm overrides it", (t) => {
  const name = uniqueName(PREFIX)
  const a = make(name, (data: Buffer) => [true, data])
  t.is(a.handlerForm, 'return')
  t.is(a.remoteCallHandler !== null && a.asyncRemoteCallHandler === null, true)
  void a.dispose()
  const b = make(uniqueName(PREFIX), (_msgId: number, _data: Buffer) => {})
  t.is(b.handlerForm, 'answerLater')
  t.is(b.remoteCallHandler, null)
  // The original SharmNpc's settable handler properties switch the form.
  b.remoteCallHandler = (d: Buffer) => [true, d]
  t.is(b.handlerForm, 'return')
  t.is(b.asyncRemoteCallHandler, null)
  void b.dispose()
  // Rest parameters have length 0: without the option this would be taken for the return form.
  const c = make(uniqueName(PREFIX), (..._args: unknown[]) => {}, { handlerForm: 'answerLater' })
  t.is(c.handlerForm, 'answerLater')
  void c.dispose()
  const e = t.throws(() => new SharmIpc(uniqueName(PREFIX), ((_a: number, _b: Buffer, _c: unknown) => {}) as any))
  t.regex(e!.message, /got a function with 3 parameters.*handlerForm/)
})

test("bad arguments throw at once (remoteRequestAsync resolves [false, ...]), saying what was expected, with Node's codes", async (t) => {
  const n = uniqueName(PREFIX)
  t.regex(
    t.throws(() => new SharmIpc(n, null as any), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })!.message,
    /handler must be a function.*got null/,
  )
  t.regex(
    t.throws(() => new SharmIpc(n, (d: Buffer) => [true, d], { protocolVersion: 2 } as any), { instanceOf: TypeError })!
      .message,
    /protocolVersion has no counterpart/,
  )
  t.regex(
    t.throws(() => new SharmIpc(n, (d: Buffer) => [true, d], { capacity: 4096 } as any), {
      code: 'ERR_INVALID_ARG_VALUE',
    })!.message,
    /use bufferCapacity here/,
  )
  t.regex(
    t.throws(() => new SharmIpc(n, (d: Buffer) => [true, d], { handlerForm: 'sync' as any }))!.message,
    /handlerForm must be 'return' or 'answerLater', got a string \("sync"\)/,
  )
  t.regex(
    t.throws(() => new SharmIpc(n, (d: Buffer) => [true, d], { bufferCapacity: -5 }), { code: 'ERR_OUT_OF_RANGE' })!
      .message,
    /got number -5/,
  )
  t.throws(() => new SharmNpc(n, 'master' as any, (d: Buffer) => [true, d]), { message: /role must be/ })
  t.deepEqual(leftoverSegments(n), [], 'a refused constructor opens nothing')

  const sm = make(n, (d: Buffer) => [true, d])
  t.regex(
    t.throws(() => sm.remoteRequest(42 as any), { code: 'ERR_INVALID_ARG_TYPE' })!.message,
    /data must be a Buffer, a Uint8Array, a string or null, got number 42/,
  )
  // remoteRequestAsync never throws: bad arguments come back as [false, null, error].
  let zero!: Promise<RequestResult>
  t.notThrows(() => {
    zero = sm.remoteRequestAsync(Buffer.alloc(1), 0)
  })
  const [ok, data, err] = await zero
  t.false(ok)
  t.is(data, null)
  t.true(err instanceof RangeError)
  t.is((err as { code?: string }).code, 'ERR_OUT_OF_RANGE')
  t.regex(err!.message, /got number 0/)
  const [okType, , errType] = await sm.remoteRequestAsync(42 as any)
  t.false(okType)
  t.is((errType as { code?: string }).code, 'ERR_INVALID_ARG_TYPE')
  t.throws(() => sm.remoteRequestWithoutResponse(42 as any), { instanceOf: TypeError })
  t.throws(() => sm.asyncAnswerOnRemoteCall(-1, [true, null]), {
    code: 'ERR_OUT_OF_RANGE',
    message: /msgId must be a non-negative integer/,
  })
  t.throws(() => sm.asyncAnswerOnRemoteCall(1, Buffer.alloc(1) as any), { message: /must be \[ok: boolean/ })
  t.throws(() => sm.asyncAnswerOnRemoteCall(1, [true, 'x' as any]), { message: /data must be a Buffer.*got a string/ })
  t.throws(() => sm.remoteRequest(null, 'soon' as any), { message: /timeout \(ms\) or a callback/ })
})

test('remoteRequest (blocking) and remoteRequestAsync get [true, data] from a return-form handler', async (t) => {
  const { sm, peer } = await pair('echo')
  const [ok, data] = sm.remoteRequest(Buffer.from('blocking'), 5000)
  t.true(ok)
  t.is(data!.toString(), 'blocking')
  const r = await sm.remoteRequestAsync(Buffer.from('async'))
  t.deepEqual([r[0], r[1]!.toString(), r.length], [true, 'async', 2])
  // null is sent as an empty payload and comes back as an empty Buffer.
  const empty = await sm.remoteRequestAsync(null)
  t.true(empty[0])
  t.is(empty[1]!.length, 0)
  // Many at once, each answered with its own data.
  const all = await Promise.all(Array.from({ length: 500 }, (_, i) => sm.remoteRequestAsync(Buffer.from(`n${i}`))))
  t.deepEqual(
    all.map((x) => [x[0], x[1]!.toString()]),
    all.map((_, i) => [true, `n${i}`]),
  )
  const report = await peer.cmd({ op: 'report' })
  t.is(report.handlerForm, 'return')
  t.deepEqual(report.reported, [])
  await peer.close()
})

test('a handler returning a Promise of [ok, data] answers when it resolves', async (t) => {
  const { sm, peer } = await pair('promise')
  const r = await sm.remoteRequestAsync(Buffer.from('x'), 5000)
  t.deepEqual([r[0], r[1]!.toString()], [true, 'promised:x'])
  t.deepEqual(
    sm.remoteRequest(Buffer.from('y'), 5000).map((v) => (Buffer.isBuffer(v) ? v.toString() : v)),
    [true, 'promised:y'],
  )
  await peer.close()
})

test('an answer-later handler answers with asyncAnswerOnRemoteCall', async (t) => {
  const { sm, peer } = await pair('later')
  const r = await sm.remoteRequestAsync(Buffer.from('job'), 5000)
  t.deepEqual([r[0], r[1]!.toString()], [true, 'later:job'])
  const s = sm.remoteRequest(Buffer.from('sync job'), 5000)
  t.deepEqual([s[0], s[1]!.toString()], [true, 'later:sync job'])
  t.is((await peer.cmd({ op: 'report' })).handlerForm, 'answerLater')
  await peer.close()
})

test('this side answers later: ids of requests, 0 for send-and-forget, false for an id answered twice', async (t) => {
  const calls: Array<[number, string]> = []
  const name = uniqueName(PREFIX)
  const sm = make(name, (msgId: number, data: Buffer) => {
    calls.push([msgId, data.toString()])
  })
  const peer = await spawnPeer(name, 'echo', {}, compatPeer)
  await attached(sm)
  const asked = peer.cmd({ op: 'request', data: 'question', timeoutMs: 5000 })
  while (calls.length === 0) await new Promise((r) => setTimeout(r, 5))
  const [msgId, data] = calls[0]
  t.true(msgId > 0)
  t.is(data, 'question')
  t.true(sm.asyncAnswerOnRemoteCall(msgId, [true, Buffer.from('answer')]))
  t.deepEqual(await asked, { ok: true, data: 'answer' })
  t.false(sm.asyncAnswerOnRemoteCall(msgId, [true, Buffer.from('again')]), 'already answered')
  t.false(sm.asyncAnswerOnRemoteCall(msgId + 1000, [true, null]), 'unknown id')
  // A false answer carries its data to a compat caller (the original dropped it).
  const asked2 = peer.cmd({ op: 'request', data: 'q2', timeoutMs: 5000 })
  while (calls.length === 1) await new Promise((r) => setTimeout(r, 5))
  t.true(sm.asyncAnswerOnRemoteCall(calls[1][0], [false, Buffer.from('why not')]))
  t.deepEqual(await asked2, { ok: false, data: 'why not', code: 'ERR_SHARM_REMOTE' })
  await peer.close()
})

test('remoteRequestWithoutResponse: every message reaches the handler in the order sent', async (t) => {
  for (const mode of ['echo', 'later']) {
    const { sm, peer } = await pair(mode)
    const n = 3000
    let sent = 0
    for (let i = 0; i < n; i++) {
      const b = Buffer.alloc(4 + (i % 300))
      b.writeUInt32LE(i, 0)
      if (sm.remoteRequestWithoutResponse(b)) sent++
      else i-- // queue full: try the same message again later
      if (i % 500 === 0) await new Promise((r) => setImmediate(r))
    }
    t.is(sent, n)
    let r: any
    for (let k = 0; k < 200; k++) {
      r = await peer.cmd({ op: 'report' })
      if (r.received === n) break
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    t.is(r.received, n, mode)
    t.is(r.outOfOrder, 0, mode)
    if (mode === 'later') {
      t.deepEqual(r.messageIds, [0], 'an answer-later handler gets msgId 0 for send-and-forget messages')
      t.is(r.answersToMessages, 0, 'answering msgId 0 sends nothing')
    }
    await peer.close()
  }
})

test('a timeout gives [false, null] after the timeout, blocking or not, and never throws', async (t) => {
  const { sm, peer } = await pair('silent')
  let start = performance.now()
  const r = await sm.remoteRequestAsync(Buffer.from('x'), 200)
  let ms = performance.now() - start
  t.deepEqual([r[0], r[1], codeOf(r)], [false, null, 'ERR_SHARM_TIMEOUT'])
  t.true(r[2] instanceof TimeoutError)
  t.true(ms >= 190 && ms < 2000, `took ${ms} ms`)
  start = performance.now()
  const s = sm.remoteRequest(Buffer.from('y'), 200)
  ms = performance.now() - start
  t.deepEqual([s[0], s[1], codeOf(s)], [false, null, 'ERR_SHARM_TIMEOUT'])
  t.true(ms >= 190 && ms < 2000, `took ${ms} ms`)
  await peer.close()
})

test('a failing peer gives [false, null]: handler threw, answered false, died with requests pending', async (t) => {
  const thrower = await pair('throw')
  const r = await thrower.sm.remoteRequestAsync(Buffer.from('abc'), 5000)
  t.deepEqual([r[0], r[1], codeOf(r)], [false, null, 'ERR_SHARM_REMOTE'])
  t.regex((r[2] as RemoteError).remoteMessage, /handler exploded on 3 bytes/)
  const s = thrower.sm.remoteRequest(Buffer.from('abcd'), 5000)
  t.deepEqual([s[0], s[1], codeOf(s)], [false, null, 'ERR_SHARM_REMOTE'])
  const rep = await thrower.peer.cmd({ op: 'report' })
  t.is(rep.reported.length, 2, 'the peer reported both exceptions to its externalExceptionHandler')
  t.regex(rep.reported[0], /^exception in the request handler: handler exploded on 3 bytes$/)
  await thrower.peer.close()

  const no = await pair('false')
  const f = await no.sm.remoteRequestAsync(Buffer.from('payload'), 5000)
  t.deepEqual([f[0], f[1]?.toString(), codeOf(f)], [false, 'payload', 'ERR_SHARM_REMOTE'])
  const g = no.sm.remoteRequest(null, 5000)
  t.deepEqual([g[0], g[1], codeOf(g)], [false, null, 'ERR_SHARM_REMOTE'])
  await no.peer.close()

  const dying = await pair('silent')
  const pending = [dying.sm.remoteRequestAsync(Buffer.from('1'), 20_000), dying.sm.remoteRequestAsync(null, 20_000)]
  let called: RequestResult[] = []
  t.deepEqual(
    dying.sm.remoteRequest(Buffer.from('cb'), (res) => called.push(res), 20_000),
    [true, null],
  )
  await new Promise((r) => setTimeout(r, 50))
  const start = performance.now()
  await dying.peer.kill()
  const results = await Promise.all(pending)
  t.true(performance.now() - start < 5000, 'failed at the death, not at the 20 s timeout')
  for (const x of results) {
    t.deepEqual([x[0], x[1]], [false, null])
    t.true(x[2] instanceof PeerGoneError)
  }
  while (called.length === 0) await new Promise((r) => setTimeout(r, 10))
  t.is(called.length, 1)
  t.deepEqual([called[0][0], called[0][1], codeOf(called[0])], [false, null, 'ERR_SHARM_PEER_GONE'])
})

test('a request made before any peer waits for one; peerConnected and peerDisconnected are called', async (t) => {
  const events: string[] = []
  const name = uniqueName(PREFIX)
  const sm = make(name, (d: Buffer) => [true, d], {
    peerConnected: () => events.push('connected'),
    bufferCapacity: 50_000,
  })
  sm.peerDisconnected = (info) => events.push(`disconnected ${typeof info.unconfirmed}`)
  t.false(sm.isConnected)
  t.is(sm.bufferCapacity, 65536, 'the original default of 50,000 rounds up to 64 KiB')
  const early = sm.remoteRequestAsync(Buffer.from('early'), 10_000)
  const peer = await spawnPeer(name, 'echo', { bufferCapacity: 1 << 20 }, compatPeer)
  const r = await early
  t.deepEqual([r[0], r[1]!.toString()], [true, 'early'])
  t.true(sm.isConnected)
  t.is((await peer.cmd({ op: 'report' })).bufferCapacity, 65536, 'the joining side uses the creator’s capacity')
  await peer.close()
  while (events.length < 2) await new Promise((res) => setTimeout(res, 10))
  t.deepEqual(events, ['connected', 'disconnected number'])
  t.false(sm.isConnected)
  // A new process takes the free side: peerConnected again, and requests flow.
  const again = await spawnPeer(name, 'echo', {}, compatPeer)
  while (events.length < 3) await new Promise((res) => setTimeout(res, 10))
  t.is(events[2], 'connected')
  const r2 = await sm.remoteRequestAsync(Buffer.from('again'), 5000)
  t.deepEqual([r2[0], r2[1]!.toString()], [true, 'again'])
  await again.close()
})

test('usageReport is plain text with the counters of stats()', async (t) => {
  const { sm, peer } = await pair('silent')
  t.true(sm.remoteRequestWithoutResponse(Buffer.alloc(10)))
  t.true(sm.remoteRequestWithoutResponse(Buffer.alloc(20)))
  t.true(sm.remoteRequestWithoutResponse(null))
  const r = await sm.remoteRequestAsync(Buffer.alloc(7), 100)
  t.is(codeOf(r), 'ERR_SHARM_TIMEOUT')
  const report = sm.usageReport()
  t.notRegex(report, /<[a-z]+>/, 'no HTML')
  const lines = report.split('\n')
  t.regex(lines[0], new RegExp(`^SharmIpc "${sm.name}": connected, ring 1048576 bytes per direction`))
  t.true(lines.includes('sent: 3 messages, 1 requests, 0 answers, 37 bytes'), report)
  t.true(lines.includes('received: 0 messages, 0 requests, 0 answers, 0 bytes'), report)
  t.true(lines.includes('timeouts: 1'), report)
  t.true(lines.includes('pending requests: 0'), report)
  t.true(lines.includes('queue-full rejections: 0'), report)
  t.regex(report, /^wake-ups: \d+$/m)
  t.regex(report, /^polling hits: \d+$/m)
  t.regex(report, /^batches: \d+ \(largest \d+ messages\)$/m)
  const s = sm.stats()
  t.true(lines.includes(`wake-ups: ${s.wakeups}`) || s.wakeups > 0)
  // The peer's own report counts what it received.
  const theirs = await peer.cmd({ op: 'report' })
  const { messages, requests, answers, bytes } = theirs.stats.received
  t.deepEqual({ messages, requests, answers, bytes }, { messages: 3, requests: 1, answers: 0, bytes: 37 })
  await peer.close()
})

test('dispose is idempotent, settles what is pending, and later calls return false without throwing', async (t) => {
  const { sm, peer } = await pair('silent')
  const pending = sm.remoteRequestAsync(Buffer.from('never answered'), 20_000)
  const called: RequestResult[] = []
  sm.remoteRequest(Buffer.from('cb'), (r) => called.push(r), 20_000)
  await new Promise((r) => setTimeout(r, 20))
  const first = sm.dispose()
  t.is(sm.dispose(), first, 'the same promise')
  await first
  await sm.dispose()
  const r = await pending
  t.deepEqual([r[0], r[1]], [false, null])
  t.true(r[2] instanceof ClosedError)
  await new Promise((res) => setTimeout(res, 20))
  t.is(called.length, 1, 'the callback of a pending request is called once')
  t.false(called[0][0])
  t.true(sm.channel.closed)
  const after = sm.remoteRequest(Buffer.from('x'))
  t.deepEqual([after[0], after[1], codeOf(after)], [false, null, 'ERR_SHARM_CLOSED'])
  const afterAsync = await sm.remoteRequestAsync(Buffer.from('x'))
  t.deepEqual([afterAsync[0], afterAsync[1], codeOf(afterAsync)], [false, null, 'ERR_SHARM_CLOSED'])
  t.false(sm.remoteRequestWithoutResponse(Buffer.from('x')))
  t.false(sm.asyncAnswerOnRemoteCall(1, [true, null]))
  t.regex(sm.usageReport(), /: disposed,/)
  await peer.close()
})

test('exceptions in the handler for send-and-forget messages go to externalExceptionHandler, delivery goes on', async (t) => {
  const reported: string[] = []
  const got: number[] = []
  const name = uniqueName(PREFIX)
  const sm = make(
    name,
    (data: Buffer) => {
      const i = data.readUInt32LE(0)
      got.push(i)
      if (i === 1) throw new Error('bad message 1')
      if (i === 2) return Promise.reject(new Error('bad message 2'))
      return [true, null]
    },
    { externalExceptionHandler: (d, e) => reported.push(`${d}: ${e.message}`) },
  )
  const peer = await spawnPeer(name, 'echo', {}, compatPeer)
  await attached(sm)
  t.deepEqual(await peer.cmd({ op: 'send', count: 5 }), { sent: 5 })
  while (got.length < 5 || reported.length < 2) await new Promise((r) => setTimeout(r, 10))
  t.deepEqual(got, [0, 1, 2, 3, 4])
  t.deepEqual(reported, [
    'exception in the request handler (send-and-forget message): bad message 1',
    'the request handler rejected (send-and-forget message): bad message 2',
  ])
  await peer.close()
})

test('a compat side and a native side interoperate', async (t) => {
  const name = uniqueName(PREFIX)
  const sm = make(name, (d: Buffer) => [true, Buffer.concat([Buffer.from('compat:'), d])])
  const echo = await spawnPeer(name, 'echo') // helpers/peer.ts: open() with onRequest
  await attached(sm)
  const r = await sm.remoteRequestAsync(Buffer.from('to native'), 5000)
  t.deepEqual([r[0], r[1]!.toString()], [true, 'to native'])
  t.deepEqual(await echo.cmd({ op: 'request', data: 'to compat', timeoutMs: 5000 }), { answer: 'compat:to compat' })
  await echo.close()
  await sm.dispose()

  const name2 = uniqueName(PREFIX)
  const sm2 = make(name2, (d: Buffer) => [false, d])
  const thrower = await spawnPeer(name2, 'throw')
  await attached(sm2)
  const f = await sm2.remoteRequestAsync(Buffer.from('x'), 5000)
  t.deepEqual([f[0], f[1], codeOf(f)], [false, null, 'ERR_SHARM_REMOTE'])
  t.regex((f[2] as RemoteError).remoteMessage, /handler exploded on 1 bytes/)
  // A false answer reaches a native caller as a RemoteError saying so.
  const back = await thrower.cmd({ op: 'request', data: 'y', timeoutMs: 5000 })
  t.is(back.error.code, 'ERR_SHARM_REMOTE')
  t.regex(back.error.message, /the handler answered false with data \(base64\): eQ==/)
  await thrower.close()
})

test('SharmNpc takes a role that changes nothing: two "servers" talk', async (t) => {
  const name = uniqueName(PREFIX)
  const a = new SharmNpc(name, PipeRole.Server, (d: Buffer) => [true, Buffer.concat([Buffer.from('a:'), d])])
  instances.add(a)
  const b = new SharmNpc(name, PipeRole.Server, (_id: number, _d: Buffer) => {})
  instances.add(b)
  t.is(a.role, 'server')
  await attached(b)
  const r = await b.remoteRequestAsync(Buffer.from('hi'), 5000)
  t.deepEqual([r[0], r[1]!.toString()], [true, 'a:hi'])
  await b.dispose()
  await a.dispose()
})
