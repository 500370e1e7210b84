// Streams (requestStream / onStream) between two processes: volume through a small ring with
// bounded memory, backpressure, cancellation both ways, errors, a peer that dies, ids of both sides.
import { Readable } from 'node:stream'

import test from 'ava'

import { PeerGoneError, RemoteError, type StreamHandler } from '../index'
import { channelKit, killAllPeers, leftoverSegments, pattern, uniqueName } from './helpers'

const PREFIX = 'streams'
const { opened, open, pair } = channelKit(PREFIX)
const GiB = 1 << 30

/** Counts a stream's bytes, checking the pattern at each chunk's ends; tracks the highest RSS. */
async function consume(s: Readable, rss = { max: 0 }): Promise<{ bytes: number; bad: number }> {
  let bytes = 0
  let bad = 0
  let n = 0
  for await (const c of s) {
    const chunk = c as Buffer
    if (chunk[0] !== (bytes & 0xff) || chunk[chunk.length - 1] !== ((bytes + chunk.length - 1) & 0xff)) bad++
    bytes += chunk.length
    if (++n % 256 === 0) rss.max = Math.max(rss.max, process.memoryUsage().rss)
  }
  return { bytes, bad }
}

const echo: StreamHandler = (_data, body) => body

test.serial('1 GiB each way through a 1 MiB ring, with memory bounded on both sides', async (t) => {
  const { ch, peer } = await pair('echo', { capacity: 1 << 20 }, {})
  t.is(ch.capacity, 1 << 20)
  const rssBefore = process.memoryUsage().rss
  const rss = { max: rssBefore }
  // Download: the peer's answer is a generated 1 GiB stream.
  const down = await consume(ch.requestStream(Buffer.from(`gen:${GiB}`)), rss)
  t.deepEqual(down, { bytes: GiB, bad: 0 })
  // Upload: a generated 1 GiB body, counted by the peer's handler.
  const answer = ch.requestStream(Buffer.from('count'), pattern(GiB))
  const chunks: Buffer[] = []
  for await (const c of answer) chunks.push(c as Buffer)
  t.deepEqual(JSON.parse(Buffer.concat(chunks).toString()), { bytes: GiB, bad: 0 })
  const r = await peer.cmd({ op: 'report' })
  const growthMb = (rss.max - rssBefore) / 2 ** 20
  t.log(
    `RSS here: ${(rssBefore / 2 ** 20).toFixed(0)} MB before, at most ${(rss.max / 2 ** 20).toFixed(0)} MB during; peer ${(r.rss / 2 ** 20).toFixed(0)} MB after`,
  )
  // 1 GiB went each way; what stays in memory is bounded by the stream windows and GC slack.
  t.true(growthMb < 200, `RSS grew by ${growthMb.toFixed(0)} MB`)
  t.true(r.rss < 400 * 2 ** 20, `peer RSS ${r.rss}`)
  t.is(ch.openStreams, 0)
  t.is(r.openStreams, 0)
  await peer.close()
  await ch.close()
})

test('a body streamed and echoed back arrives intact; stream ids of both sides never collide', async (t) => {
  const { ch, peer } = await pair('echo', { onStream: echo }, {})
  const mine = Array.from({ length: 8 }, (_, i) => consume(ch.requestStream(Buffer.from('echo'), pattern(300_000 + i))))
  const theirs = peer.cmd({ op: 'openStreams', k: 8, bytes: 500_000 })
  const got = await Promise.all(mine)
  got.forEach((g, i) => t.deepEqual(g, { bytes: 300_000 + i, bad: 0 }))
  t.deepEqual((await theirs).streams, Array(8).fill({ bytes: 500_000, bad: 0 }))
  await peer.close()
  await ch.close()
})

test('a stream whose reader waits does not hold up requests and messages; destroying it stops the peer', async (t) => {
  const { ch, peer } = await pair('echo', {}, {})
  const stalled = ch.requestStream(Buffer.from(`gen:${GiB}`))
  stalled.pause()
  await new Promise((r) => stalled.once('readable', r)) // the window is filled, nobody reads
  // If the stream could fill the ring, these would wait behind it for ever.
  const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => ch.request(Buffer.from(`r${i}`))))
  t.true(answers.every((a, i) => a.toString() === `r${i}`))
  for (let i = 0; i < 1000; i++) ch.send(Buffer.alloc(8))
  stalled.destroy()
  let r: any
  for (let k = 0; k < 200; k++) {
    r = await peer.cmd({ op: 'report' })
    if (r.received === 1000 && r.streamEvents.includes('gen destroyed') && r.openStreams === 0) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.is(r.received, 1000)
  t.true(r.streamEvents.includes('gen destroyed'), 'the peer stopped its answer stream')
  t.is(r.openStreams, 0)
  t.is(ch.openStreams, 0)
  await peer.close()
  await ch.close()
})

test('errors travel: a failing answer, a throwing handler, no handler, a failing body', async (t) => {
  const { ch, peer } = await pair('echo', {}, {})
  const broken = ch.requestStream(Buffer.from('fail-after:50000'))
  const e1 = await t.throwsAsync(consume(broken), { instanceOf: RemoteError })
  t.regex(e1!.message, /answer stream broke after 50000 bytes/)
  await t.throwsAsync(consume(ch.requestStream(Buffer.from('throw'))), {
    instanceOf: RemoteError,
    message: /stream handler exploded/,
  })
  // The peer's handler watches its body; ours fails half way.
  let sent = 0
  const failing = new Readable({
    read() {
      if (sent > 200_000) return void this.destroy(new Error('our body broke'))
      sent += 10_000
      this.push(Buffer.alloc(10_000))
    },
  })
  const answer = ch.requestStream(Buffer.from('watch-body'), failing)
  await t.throwsAsync(consume(answer), { message: /our body broke/ })
  let r: any
  for (let k = 0; k < 200; k++) {
    r = await peer.cmd({ op: 'report' })
    if (r.streamEvents.some((e: string) => e.startsWith('body error'))) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.true(
    r.streamEvents.some((e: string) => /^body error: RemoteError: .*our body broke/.test(e)),
    JSON.stringify(r.streamEvents),
  )
  await peer.close()
  await ch.close()

  // This side has no onStream handler: the peer's stream fails with a RemoteError there.
  const other = await pair('echo', {}, {})
  const res = await other.peer.cmd({ op: 'openStreams', k: 1, bytes: 10 })
  t.regex(res.error?.message ?? '', /the peer has no onStream handler/)
  await other.peer.close()
  await other.ch.close()
})

test('the handler stopping the body tells this side, which stops sending it', async (t) => {
  const { ch, peer } = await pair('echo', {}, {})
  let destroyed = false
  const body = pattern(GiB)
  body.once('close', () => (destroyed = true))
  const answer = ch.requestStream(Buffer.from('stop-body'), body)
  const chunks: Buffer[] = []
  for await (const c of answer) chunks.push(c as Buffer)
  t.is(Buffer.concat(chunks).toString(), 'stopped')
  for (let k = 0; k < 100 && !destroyed; k++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.true(destroyed, 'the body was destroyed, not read to its end')
  await peer.close()
  await ch.close()
})

test('a peer that dies mid-stream fails the stream with ERR_SHARM_PEER_GONE', async (t) => {
  const { ch, peer } = await pair('echo', {}, {})
  const s = ch.requestStream(Buffer.from(`gen:${GiB}`))
  let got = 0
  let killing = false
  const done = t.throwsAsync(
    (async () => {
      for await (const c of s) {
        got += (c as Buffer).length
        if (got > 5_000_000 && !killing) {
          killing = true
          void peer.kill()
        }
      }
    })(),
    { instanceOf: PeerGoneError },
  )
  await done
  t.true(got > 5_000_000)
  t.is(ch.openStreams, 0)
  await ch.close()
})

test('bad arguments throw at once', async (t) => {
  t.throws(() => open(uniqueName(PREFIX), { onStream: 5 as unknown as StreamHandler }), {
    instanceOf: TypeError,
    message: /onStream must be a function, got number 5/,
  })
  const ch = open(uniqueName(PREFIX))
  t.throws(() => ch.requestStream(42 as unknown as Buffer), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: /data must be a Buffer, a Uint8Array or a string, got number 42/,
  })
  t.throws(() => ch.requestStream(Buffer.from('x'), {} as unknown as Readable), {
    instanceOf: TypeError,
    code: 'ERR_INVALID_ARG_TYPE',
    message: /body must be a stream.Readable, got an instance of Object/,
  })
  await ch.close()
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
