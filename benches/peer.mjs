// The second process of every benchmark run. Driven by the bench process over the fork IPC
// channel; it receives, answers requests (echo), and in full-duplex runs sends as well.
import { counter, pump, rpcLoop } from './loops.mjs'
import { transports } from './transports.mjs'

let t = null
let kind = null
let recv = counter()

process.on('message', async (m) => {
  if (m === null || typeof m !== 'object' || typeof m.ctl !== 'string') return
  try {
    switch (m.ctl) {
      case 'setup': {
        kind = transports[m.transport]
        const setup = { ...m.setup, port: process }
        const handlers = { onMessage: (d) => recv.onMessage(d), onRequest: (d) => d }
        t = await kind.connect('b', setup, handlers)
        process.send({ ctl: 'ready' })
        break
      }
      case 'recv':
        recv = counter()
        process.send({ ctl: 'receiving' })
        process.send({ ctl: 'received', ...(await recv.done) })
        break
      case 'pump': {
        const r = await pump(t, Buffer.alloc(m.size, 7), m.ms, kind.sendTakesOnFalse)
        process.send({ ctl: 'pumped', ...r })
        break
      }
      case 'rpc': {
        const r = await rpcLoop(t, Buffer.alloc(m.size, 7), m.inflight, m.ms)
        process.send({ ctl: 'rpcDone', ...r })
        break
      }
      case 'cpu':
        process.send({ ctl: 'cpuIs', usage: process.cpuUsage() })
        break
      case 'close':
        await t?.close()
        process.send({ ctl: 'closed' }, () => process.exit(0))
        break
    }
  } catch (e) {
    process.send({ ctl: 'failed', error: String(e?.stack ?? e) })
    process.exitCode = 1
  }
})
// The bench process went away: do not linger.
process.on('disconnect', () => process.exit(1))
process.send({ ctl: 'started' })
