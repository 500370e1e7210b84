// Process2 of the original SharmIPC demo, on sharmipc/compat: see examples/process1.mjs.
//
//   node examples/process1.mjs        node examples/process2.mjs
//
// Process2 has the original's AsyncRemoteCallHandler form: it answers each request later with
// asyncAnswerOnRemoteCall, echoing the request's data. The original's Process2 "answered" its
// send-and-forget messages too; here those come with msgId 0 and answering them sends nothing.
// When Process1 asks for "send N", it sends N send-and-forget messages of 512 bytes and prints
// how long queuing them took. It exits when Process1 leaves.
// In a project of your own: import { SharmIpc } from 'sharmipc/compat'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { SharmIpc } = require('sharmipc/compat')

const NAME = process.argv[2] ?? 'MNPC'
const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits })

// The original's AsyncRemoteCallHandler: (msgId, data), answered with asyncAnswerOnRemoteCall.
function asyncRemoteCallHandler(msgId, data) {
  if (msgId === 0) return // a send-and-forget message: nothing to answer
  const order = /^send (\d+)$/.exec(data.length < 32 ? data.toString() : '')
  if (order) {
    sm.asyncAnswerOnRemoteCall(msgId, [true, Buffer.from(`sending ${order[1]} messages of 512 B`)])
    setImmediate(() => sendMessages(Number(order[1])))
    return
  }
  sm.asyncAnswerOnRemoteCall(msgId, [true, data])
}

const sm = new SharmIpc(NAME, asyncRemoteCallHandler, {
  externalExceptionHandler: (description, error) => console.error(`process2: ${description}: ${error.message}`),
  peerConnected: () => console.log('process2: process1 is there, answering its requests'),
  peerDisconnected: async () => {
    console.log('process2: process1 left')
    console.log(`\n${sm.usageReport()}\n`)
    await sm.dispose()
    console.log('process2: done')
  },
})
console.log(`process2: channel ${JSON.stringify(NAME)} open (pid ${process.pid}), waiting for process1 ...`)

async function sendMessages(n) {
  const data = Buffer.alloc(512)
  const t = performance.now()
  for (let i = 0; i < n; i++) {
    // false: the queue is over maxQueueSizeInBytes; wait for room and try again.
    while (!sm.remoteRequestWithoutResponse(data)) await new Promise((r) => setTimeout(r, 1))
  }
  const ms = performance.now() - t
  console.log(`process2: ${fmt(n)} send-and-forget messages of 512 B queued in ${fmt(ms, 1)} ms`)
}
