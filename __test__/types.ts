// Type tests, checked by `tsc -p __test__/tsconfig.json` (never run): each `@ts-expect-error`
// line must fail to compile, every other line must compile.
import { EventEmitter, on, once } from 'node:events'

import { SharmIpc, SharmNpc, PipeRole, type RequestResult } from '../compat'
import {
  AbortError,
  open,
  Channel,
  type ChannelEvents,
  type ConnectInfo,
  type DisconnectInfo,
  type SharmError,
  type SharmErrorCode,
} from '../index'

declare const ch: Channel

// The channel is Node's typed EventEmitter.
const asEmitter: EventEmitter<ChannelEvents> = ch
void asEmitter

ch.on('message', (data) => {
  const b: Buffer = data
  void b
})
// @ts-expect-error a message is a Buffer, not a number
ch.on('message', (d: number) => void d)
// @ts-expect-error no such event
ch.on('mesage', () => {})
ch.addListener('connect', ({ generation, pid }) => {
  const n: number = generation + pid
  void n
})
ch.once('connect', (info) => {
  const i: ConnectInfo = info
  void i
})
ch.prependListener('disconnect', (info) => {
  const d: DisconnectInfo = info
  const u: Buffer[] = info.undelivered
  ;(void d, u)
})
// @ts-expect-error a disconnect's info has no pid
ch.on('disconnect', (info) => info.pid)
ch.on('error', (err) => {
  const e: SharmError = err
  const code: SharmErrorCode = err.code
  // The code is a union of literals: comparing with a code that does not exist does not compile.
  // @ts-expect-error not a code sharmipc raises
  if (err.code === 'ERR_SHARM_NOPE') void e
  void code
})
ch.on('close', () => {})
ch.on('drain', () => {})
ch.emit('connect', { generation: 1, pid: 2 })
// @ts-expect-error 'connect' carries { generation, pid }
ch.emit('connect', 'x')
// @ts-expect-error 'close' carries nothing
ch.emit('close', 1)
ch.off('message', () => {})

// Node's static events.once and events.on take the channel (@types/node types their results any[]);
// Channel.once and Channel.on are the same functions, typed by ChannelEvents.
async function onceAndOn(): Promise<void> {
  const [info] = await once(ch, 'connect')
  void info
  for await (const [data] of on(ch, 'message')) void data
  const [joined] = await Channel.once(ch, 'connect', { signal: AbortSignal.timeout(1000) })
  const j: ConnectInfo = joined
  const [left] = await Channel.once(ch, 'disconnect')
  const u: Buffer[] = left.undelivered
  const none: [] = await Channel.once(ch, 'close')
  // @ts-expect-error a connect's info is not a Buffer
  const wrong: Buffer = (await Channel.once(ch, 'connect'))[0]
  // @ts-expect-error no such event
  await Channel.once(ch, 'conect')
  for await (const [data] of Channel.on(ch, 'message')) {
    const b: Buffer = data
    // @ts-expect-error a message is a Buffer
    const n: number = data
    ;(void b, n)
  }
  // Any other emitter, as events.once.
  const other: any[] = await Channel.once(new EventEmitter(), 'x')
  ;(void j, u, none, wrong, other)
}
void onceAndOn

// The async iterator of messages.
async function iterate(signal: AbortSignal): Promise<void> {
  const it: AsyncIterableIterator<Buffer> = ch.messages({ signal, highWaterMark: 16 })
  for await (const m of it) {
    const b: Buffer = m
    void b
  }
  // @ts-expect-error no such option
  ch.messages({ highWatermark: 1 })
  const e = new AbortError()
  const c: 'ABORT_ERR' = e.code
  void c
}
void iterate

// Strings as payloads; promise-returning methods return promises.
async function payloads(): Promise<void> {
  const c = open('x')
  const a: Buffer = await c.request('text')
  const s: Buffer = c.requestSync('text')
  const sent: boolean = c.send('text')
  c.answer(1, 'text')
  c.requestStream('text')
  // @ts-expect-error numbers are not payloads
  c.send(42)
  const r: boolean = c.hasRef()
  ;(void a, s, sent, r)
}
void payloads

// Compat: both handler forms, with annotated parameters (see lib/compat.ts for why TypeScript
// cannot tell an unannotated two-parameter handler from the one-parameter form).
const later = new SharmIpc('jobs', (msgId: number, data: Buffer) => {
  ;(void msgId, data)
})
const returns = new SharmIpc('jobs', (data) => [true, data])
const returnsAsync = new SharmIpc('jobs', async (data) => [true, data.subarray(1)])
const npcLater = new SharmNpc('jobs', PipeRole.Server, (msgId: number, data: Buffer) => void [msgId, data])
const npcReturns = new SharmNpc('jobs', PipeRole.Client, (data) => [false, data])
// With { handlerForm: 'answerLater' } an answer-later handler needs no annotations.
const laterByForm = new SharmIpc(
  'jobs',
  (msgId, data) => {
    const n: number = msgId
    const b: Buffer = data
    ;(void n, b)
  },
  { handlerForm: 'answerLater', timeoutMs: 1000 },
)
const npcLaterByForm = new SharmNpc('jobs', PipeRole.Server, (msgId, data) => void [msgId + 1, data.length], {
  handlerForm: 'answerLater',
})
const returnsByForm = new SharmIpc('jobs', (data) => [true, data.subarray(1)], { handlerForm: 'return' })
void [laterByForm, npcLaterByForm, returnsByForm]
async function compat(): Promise<void> {
  const r: RequestResult = await later.remoteRequestAsync('text', 0)
  const w: boolean = returns.remoteRequestWithoutResponse('text')
  ;(void r, w, returnsAsync, npcLater, npcReturns)
}
void compat
