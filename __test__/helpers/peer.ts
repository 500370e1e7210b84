// A second process for the tests: opens a channel and does what the test tells it over the
// child_process IPC pipe. Usage: node --import tsx peer.ts <name> <mode> [optionsJson]
import { writeFileSync } from 'node:fs'
import { Readable } from 'node:stream'

import { open, type Channel, type OpenOptions, type StreamHandler } from '../../index'
import { pattern } from './index'

const [name, mode, optionsJson] = process.argv.slice(2)
const { reportFile, ...options }: OpenOptions & { reportFile?: string } = JSON.parse(optionsJson ?? '{}')
const reply = (m: unknown) => process.send!(m)

let received = 0
let lastError: { code?: string; message: string } | null = null
let closedByError = false
let outOfOrder = 0
let bytesReceived = 0
/** What happened to streams here, in order (reported by 'report'). */
const streamEvents: string[] = []
/** What the 'cancel' handler saw of `ctx.signal`s that aborted (reported by 'report'). */
const signalEvents: Array<{ tag: string; aborted: boolean; reason: string; answered: unknown }> = []
/** Requests the 'cancel' handler took and left unsettled ('hang' and 'later'). */
let abandoned = 0
/** With the option-less env SHARM_PEER_TEXTS=1, messages are kept as text for 'lastMessages'. */
const keepTexts = process.env.SHARM_PEER_TEXTS === '1'
const lastTexts: string[] = []

/** Counts a stream's bytes, checking the pattern at each chunk's ends. */
async function consume(body: Readable): Promise<{ bytes: number; bad: number }> {
  let bytes = 0
  let bad = 0
  for await (const c of body) {
    const chunk = c as Buffer
    if (
      chunk.length > 0 &&
      (chunk[0] !== (bytes & 0xff) || chunk[chunk.length - 1] !== ((bytes + chunk.length - 1) & 0xff))
    )
      bad++
    bytes += chunk.length
  }
  return { bytes, bad }
}

/** onStream of every peer: what it does is named by the request data. */
const streamHandler: StreamHandler = async (data, body) => {
  const [what, arg] = data.toString().split(':')
  streamEvents.push(`open ${what}`)
  switch (what) {
    case 'echo':
      return body
    case 'count': {
      const r = await consume(body)
      streamEvents.push(`counted ${r.bytes}`)
      return Buffer.from(JSON.stringify(r))
    }
    case 'gen':
      return pattern(Number(arg), () => streamEvents.push('gen destroyed'))
    case 'fail-after': {
      const n = Number(arg)
      let sent = 0
      return new Readable({
        read() {
          if (sent >= n) return void this.destroy(new Error(`answer stream broke after ${n} bytes`))
          sent += 1000
          this.push(Buffer.alloc(1000, 1))
        },
      })
    }
    case 'throw':
      throw new Error('stream handler exploded')
    case 'stop-body': {
      // Reads one chunk of the body, then destroys it.
      for await (const _ of body) break
      streamEvents.push('body stopped')
      return Buffer.from('stopped')
    }
    case 'watch-body':
      body.on('error', (e) => streamEvents.push(`body error: ${e.name}: ${e.message}`))
      body.resume()
      return new Readable({ read() {} })
  }
  throw new Error(`unknown stream request ${JSON.stringify(what)}`)
}

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
    case 'sync-back':
      // For a request whose data is a number: blocks in a requestSync of its own back at the asker (timeout: the request's data, in
      // ms), never answers the request, and writes how its requestSync ended into the file named
      // by the options' `reportFile`, synchronously (the asker reads it without its event loop).
      // Other requests are echoed.
      return (data, ctx) => {
        if (!/^\d+$/.test(data.toString())) return data
        ctx.answerLater()
        let result = 'answered'
        try {
          ch!.requestSync(Buffer.from('back'), { timeoutMs: Number(data.toString()) })
        } catch (e) {
          result = (e as { code?: string }).code ?? String(e)
        }
        writeFileSync(reportFile!, result)
      }
    case 'cancel':
      // What it does is named by the request's first byte: 'p'ing and 'e'cho answer at once,
      // 'f'ail throws, 'h'ang never settles, 'l'ater calls answerLater() and never answers;
      // 'w'atch (and 'W'atch, which calls answerLater() first) waits for ctx.signal to abort, then
      // records what it saw and tries to answer (the answer must go nowhere).
      return (data, ctx) => {
        switch (data[0]) {
          case 0x70: // p
            return Buffer.from('pong')
          case 0x65: // e
            return data
          case 0x66: // f
            throw new Error('failed on purpose')
          case 0x68: // h
            abandoned++
            return new Promise<Buffer>(() => {})
          case 0x6c: // l
            abandoned++
            ctx.answerLater()
            return
        }
        const tag = data.toString()
        const signal = ctx.signal
        const later = data[0] === 0x57 // W
        if (later) ctx.answerLater()
        return new Promise<Buffer>((resolve) => {
          signal.addEventListener('abort', () => {
            let answered: unknown
            try {
              answered = ch!.answer(ctx.id, Buffer.from('too late'))
            } catch (e) {
              answered = `threw ${(e as Error).name}: ${(e as Error).message}`
            }
            const r = signal.reason as Error
            signalEvents.push({ tag, aborted: signal.aborted, reason: `${r?.name}: ${r?.message}`, answered })
            resolve(Buffer.from('after the abort'))
          })
        })
      }
    default:
      return undefined
  }
}

let ch: Channel | undefined
try {
  ch = open(name, { ...options, onRequest: handlerFor(mode), onStream: streamHandler })
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
    if (keepTexts) lastTexts.push(data.toString('utf8'))
  })

  process.on('message', async (cmd: any) => {
    try {
      switch (cmd.op) {
        case 'openStreams': {
          // Opens cmd.k echo streams to the test process at once, each with a body of cmd.bytes.
          const all = Array.from({ length: cmd.k }, () =>
            consume(ch.requestStream(Buffer.from('echo'), pattern(cmd.bytes))),
          )
          reply({ streams: await Promise.all(all) })
          break
        }
        case 'report':
          reply({
            pid: process.pid,
            received,
            outOfOrder,
            bytesReceived,
            lastError,
            closedByError,
            closed: ch.closed,
            stats: ch.stats(),
            streamEvents,
            openStreams: ch.openStreams,
            rss: process.memoryUsage().rss,
            signalEvents,
            abandoned,
          })
          break
        case 'gc': {
          // Needs node --expose-gc: collects, lets freed memory go back, and reports the RSS.
          for (let i = 0; i < 3; i++) {
            global.gc!()
            await new Promise((r) => setTimeout(r, 50))
          }
          reply({ rss: process.memoryUsage().rss })
          break
        }
        case 'request': {
          const r = await ch.request(Buffer.from(cmd.data), {
            timeoutMs: cmd.timeoutMs,
          })
          reply({ answer: r.toString() })
          break
        }
        case 'lastMessages':
          reply({ texts: lastTexts.splice(0) })
          break
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
        case 'sendUntilFull': {
          // Sends numbered messages (cmd.bytes each, the number in the first 4 bytes) until send
          // returns false, replies how many were taken, then replies again on 'drain'.
          let sent = 0
          const msg = Buffer.alloc(Math.max(4, cmd.bytes ?? 64))
          for (;;) {
            msg.writeUInt32LE(sent, 0)
            if (!ch.send(msg)) break
            sent++
            if (sent >= 10_000_000) break
          }
          ch.once('drain', () => reply({ drained: true, sent }))
          reply({ full: true, sent })
          break
        }
        case 'sendStrings':
          for (const s of cmd.strings as string[]) ch.send(s)
          reply({ sent: cmd.strings.length })
          break
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
