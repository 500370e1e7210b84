// Process1 of the original SharmIPC demo, on sharmipc/compat. Start it and examples/process2.mjs
// in two terminals, in either order:
//
//   node examples/process1.mjs        node examples/process2.mjs
//
// Process1 answers every request with 10 bytes (the original's RemoteCall form). Once Process2
// is there it makes 40,000 sequential RemoteRequestAsync calls of 1 byte (the original's
// t001_TestIntensiveParallel: 20 x 2,000, one call outstanding at a time), then 10,000 blocking
// RemoteRequest calls of 512 bytes, then asks Process2 for 10,000 send-and-forget messages of
// 512 bytes and measures them from the first arrival to the last. Unlike the original's demo it
// counts each direction on its own and prints calls/s. Then it prints its usage report and exits.
// In a project of your own: import { SharmIpc } from 'sharmipc/compat'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { SharmIpc } = require('sharmipc/compat')

const NAME = process.argv[2] ?? 'MNPC'
const MESSAGES = 10_000
const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits })

let firstArrival = 0
let arrived = 0
let allArrived
const messagesDone = new Promise((resolve) => (allArrived = resolve))

// The original's RemoteCall: (data) => (ok, data). It also gets Process2's send-and-forget
// messages (there, what it returns goes nowhere).
function remoteCall(data) {
  if (data.length === 512) {
    if (arrived === 0) firstArrival = performance.now()
    if (++arrived === MESSAGES) allArrived(performance.now() - firstArrival)
  }
  return [true, Buffer.alloc(10)]
}

const sm = new SharmIpc(NAME, remoteCall, {
  externalExceptionHandler: (description, error) => console.error(`process1: ${description}: ${error.message}`),
})
console.log(`process1: channel ${JSON.stringify(NAME)} open (pid ${process.pid}), waiting for process2 ...`)

let started = false
sm.peerConnected = () => {
  if (started) return
  started = true
  run().catch((e) => {
    console.error(e)
    process.exitCode = 1
  })
}
sm.peerDisconnected = () => console.log('process1: process2 left')

async function run() {
  console.log('process1: process2 is there')

  // 1. t001_TestIntensiveParallel: 20 x 2,000 awaited calls of 1 byte, one at a time.
  const one = Buffer.alloc(1)
  let calls = 0
  let sentBytes = 0
  let gotBytes = 0
  let t = performance.now()
  for (let item = 0; item < 20; item++) {
    for (let i = 0; i < 2000; i++) {
      const [ok, data] = await sm.remoteRequestAsync(one)
      if (!ok) throw new Error(`call ${calls} failed`)
      calls++
      sentBytes += one.length
      gotBytes += data.length
    }
  }
  let ms = performance.now() - t
  console.log(
    `remoteRequestAsync, 1 B, sequential: ${fmt(calls)} calls in ${fmt(ms)} ms = ${fmt((calls * 1000) / ms)} calls/s ` +
      `(${fmt(sentBytes)} B out, ${fmt(gotBytes)} B back)`,
  )

  // 2. The original's commented-out RPC meter: blocking calls of 512 bytes.
  const req = Buffer.alloc(512)
  calls = 0
  t = performance.now()
  for (let i = 0; i < 10_000; i++) {
    const [ok] = sm.remoteRequest(req)
    if (!ok) throw new Error(`blocking call ${i} failed`)
    calls++
  }
  ms = performance.now() - t
  console.log(
    `remoteRequest (blocking), 512 B: ${fmt(calls)} calls in ${fmt(ms)} ms = ${fmt((calls * 1000) / ms)} calls/s, ` +
      `${fmt((calls * 512) / 1e3 / ms, 1)} MB/s of requests`,
  )

  // 3. Send-and-forget: Process2 sends 10,000 x 512 B, timed here from first arrival to last.
  const [ok, answer] = await sm.remoteRequestAsync(Buffer.from(`send ${MESSAGES}`))
  if (!ok) throw new Error('process2 did not take the send-and-forget order')
  console.log(`process1: process2 says ${JSON.stringify(answer.toString())}`)
  ms = await messagesDone
  console.log(
    `send-and-forget, 512 B, received: ${fmt(MESSAGES)} messages in ${fmt(ms, 1)} ms = ` +
      `${fmt((MESSAGES * 1000) / ms)} msg/s, ${fmt((MESSAGES * 512) / 1e3 / ms, 1)} MB/s`,
  )

  console.log(`\n${sm.usageReport()}\n`)
  await sm.dispose()
  console.log('process1: done')
}
