// A second process for the tests: opens a channel and does what the test tells it over the
// child_process IPC pipe. Usage: node --import tsx peer.ts <name> <mode> [optionsJson]
import { open, type Channel, type OpenOptions } from '../../index'

const [name, mode, optionsJson] = process.argv.slice(2)
const options: OpenOptions = JSON.parse(optionsJson ?? '{}')
const reply = (m: unknown) => process.send!(m)

let received = 0
let lastError: { code?: string; message: string } | null = null
let closedByError = false
let outOfOrder = 0
let bytesReceived = 0

function handlerFor(m: string): OpenOptions['onRequest'] {
  switch (m) {
    case 'echo':
      return (data) => data
    case 'throw':
      return (data) => {
        throw new Error(`handler exploded on ${data.length} bytes`)
      }
    case 'later':
      return (data, ctx) => {
        ctx.answerLater()
        setTimeout(() => ch!.answer(ctx.id, Buffer.concat([Buffer.from('later:'), data])), 5)
      }
    case 'string':
      return () => 'not bytes' as unknown as Buffer
    case 'silent':
      return (_data, ctx) => {
        ctx.answerLater()
      }
    default:
      return undefined
  }
}

let ch: Channel | undefined
try {
  ch = open(name, { ...options, onRequest: handlerFor(mode) })
} catch (e) {
  const err = e as Error & { code?: string }
  // Exit only once the message is out: exiting at once could lose it.
  process.send!({ openError: { code: err.code, message: err.message, name: err.name } }, () => process.exit(0))
}
if (ch !== undefined) serve(ch)

function serve(ch: Channel) {
  ch.on('error', (e: Error & { code?: string }) => {
    lastError = { code: e.code, message: e.message }
  })
  ch.on('close', () => {
    closedByError = lastError !== null
  })
  ch.on('message', (data: Buffer) => {
    if (data.length >= 4) {
      const seq = data.readUInt32LE(0)
      if (seq !== received) outOfOrder++
    }
    received++
    bytesReceived += data.length
  })

  process.on('message', async (cmd: any) => {
    try {
      switch (cmd.op) {
        case 'report':
          reply({ received, outOfOrder, bytesReceived, lastError, closedByError, closed: ch.closed, stats: ch.stats() })
          break
        case 'request': {
          const r = await ch.request(Buffer.from(cmd.data), {
            timeoutMs: cmd.timeoutMs,
          })
          reply({ answer: r.toString() })
          break
        }
        case 'flood': {
          // Sends a small message every turn of the event loop for cmd.ms milliseconds.
          const stop = Date.now() + cmd.ms
          const tick = () => {
            if (Date.now() < stop && !ch.closed) {
              ch.send(Buffer.alloc(8))
              setImmediate(tick)
            }
          }
          tick()
          reply({ flooding: true })
          break
        }
        case 'requestSyncAt':
          reply({ scheduled: true })
          setTimeout(() => {
            try {
              ch.requestSync(Buffer.from('sync'), { timeoutMs: cmd.timeoutMs })
              reply({ syncResult: 'answered' })
            } catch (e) {
              reply({ syncResult: (e as { code?: string }).code })
            }
          }, cmd.at - Date.now())
          break
        case 'close':
          await ch.close()
          reply({ closed: true })
          process.exit(0)
      }
    } catch (e) {
      reply({
        error: {
          code: (e as { code?: string }).code,
          message: (e as Error).message,
        },
      })
    }
  })

  reply({ ready: true })
}
