// A peer for the departure tests: it starts, loads everything, and opens its channel only when
// told to (so a test can replace a killed peer within milliseconds). What it does is written to
// a log file with a synchronous write before it is acknowledged anywhere, so the log survives a
// SIGKILL: every request its handler got (`R <id>`), every message delivered to its listener
// (`M <number>`). Told to `send-and-die`, it opens, sends `count` messages (numbered from 0, as
// u32) and SIGKILLs itself 100 ms later.
// Usage: node --import tsx restart-peer.ts <name> <log> [closeAfterConnectMs]
import { closeSync, openSync, writeSync } from 'node:fs'

import { open, type Channel } from '../../index'

const [name, logPath, closeAfter] = process.argv.slice(2)
const log = openSync(logPath, 'a')
const write = (line: string) => writeSync(log, `${line}\n`)

let ch: Channel | null = null

function openWhenFree(): void {
  try {
    ch = open(name, {
      onRequest: (data) => {
        write(`R ${data.toString()}`)
        return data
      },
    })
  } catch (e) {
    // The killed predecessor may still hold the side for a moment.
    if ((e as { code?: string }).code === 'ERR_SHARM_BUSY') return void setTimeout(openWhenFree, 5)
    throw e
  }
  ch.on('message', (m: Buffer) => write(`M ${m.readUInt32LE(0)}`))
  ch.on('error', (e) => write(`E ${e.message}`))
  if (closeAfter !== undefined) {
    ch.once('connect', () =>
      setTimeout(async () => {
        await ch!.close()
        process.exit(0)
      }, Number(closeAfter)),
    )
  }
  process.send!({ opened: true })
}

process.on('message', (m: { op: string; count?: number }) => {
  if (m.op === 'open') openWhenFree()
  if (m.op === 'send-and-die') {
    openWhenFree()
    for (let i = 0; i < m.count!; i++) {
      const b = Buffer.alloc(4)
      b.writeUInt32LE(i)
      ch!.send(b)
    }
    setTimeout(() => process.kill(process.pid, 'SIGKILL'), 100)
  }
  if (m.op === 'close') {
    void (async () => {
      await ch?.close()
      closeSync(log)
      process.send!({ closed: true }, () => process.exit(0))
    })()
  }
})
process.send!({ ready: true })
