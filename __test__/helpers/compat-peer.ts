// A second process for the compat tests: a SharmIpc from sharmipc/compat on channel <name>, with
// the handler of <mode>, doing what the test tells it over the child_process IPC pipe.
// Usage: node --import tsx compat-peer.ts <name> <mode> [optionsJson]
import { SharmIpc, type AsyncRemoteCallHandler, type RemoteCall, type SharmIpcOptions } from '../../compat'

const [name, mode, optionsJson] = process.argv.slice(2)
const options: SharmIpcOptions = JSON.parse(optionsJson ?? '{}')
const reply = (m: unknown) => process.send!(m)

/** Send-and-forget messages that reached the handler, with the msgId it was given (answer-later form). */
let received = 0
let outOfOrder = 0
const messageIds = new Set<number>()
let answersToMessages = 0
const reported: string[] = []

function numbered(data: Buffer): void {
  if (data.length >= 4 && data.readUInt32LE(0) !== received) outOfOrder++
  received++
}

/** Typed handlers of each form (a union return type would not type the tuples). */
const returning = (f: RemoteCall) => f
const later = (f: AsyncRemoteCallHandler) => f

function handlerFor(m: string): RemoteCall | AsyncRemoteCallHandler {
  switch (m) {
    // The original's RemoteCall form: answers by returning [ok, data].
    case 'echo':
      return returning((data: Buffer) => {
        numbered(data)
        return [true, data]
      })
    case 'promise':
      return returning(async (data: Buffer) => {
        await new Promise((r) => setTimeout(r, 2))
        return [true, Buffer.concat([Buffer.from('promised:'), data])]
      })
    case 'false':
      return returning((data: Buffer) => [false, data.length > 0 ? data : null])
    case 'throw':
      return returning((data: Buffer) => {
        throw new Error(`handler exploded on ${data.length} bytes`)
      })
    // The original's AsyncRemoteCallHandler form, as Process2 of its demo: answers later, also
    // "answers" send-and-forget messages (msgId 0 here, which answers nothing).
    case 'later':
      return later((msgId: number, data: Buffer) => {
        if (msgId === 0) {
          numbered(data)
          messageIds.add(msgId)
          if (sm.asyncAnswerOnRemoteCall(msgId, [true, data])) answersToMessages++
          return
        }
        setTimeout(() => sm.asyncAnswerOnRemoteCall(msgId, [true, Buffer.concat([Buffer.from('later:'), data])]), 5)
      })
    case 'silent':
      return later((_msgId: number, _data: Buffer) => {})
    default:
      throw new Error(`unknown compat peer mode ${m}`)
  }
}

const sm: SharmIpc = new SharmIpc(name, handlerFor(mode), {
  ...options,
  externalExceptionHandler: (description, error) => reported.push(`${description}: ${error.message}`),
})

process.on('message', async (cmd: any) => {
  switch (cmd.op) {
    case 'report':
      reply({
        received,
        outOfOrder,
        messageIds: [...messageIds],
        answersToMessages,
        reported,
        handlerForm: sm.handlerForm,
        bufferCapacity: sm.bufferCapacity,
        stats: sm.stats(),
      })
      break
    case 'request': {
      const [ok, data, error] = await sm.remoteRequestAsync(Buffer.from(cmd.data), cmd.timeoutMs)
      reply({ ok, data: data?.toString() ?? null, code: (error as { code?: string } | undefined)?.code })
      break
    }
    case 'send': {
      let sent = 0
      for (let i = 0; i < cmd.count; i++) {
        const b = Buffer.alloc(4)
        b.writeUInt32LE(i, 0)
        if (sm.remoteRequestWithoutResponse(b)) sent++
      }
      reply({ sent })
      break
    }
    case 'close':
      await sm.dispose()
      reply({ closed: true })
      process.exit(0)
  }
})

reply({ ready: true })
