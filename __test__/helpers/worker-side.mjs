// Runs in a worker_threads Worker: opens the channel named in workerData through the package's ES
// module entry, asks the peer process one request, sends it `messages` numbered messages, reports,
// then leaves the way workerData.leave says: 'close' (await close()), 'exit' (process.exit() inside
// the worker, without close) or 'stay' (keeps the channel open until the parent terminates it).
import { parentPort, threadId, workerData } from 'node:worker_threads'

import { open } from 'sharmipc'

const { name, messages, leave } = workerData
const ch = open(name)
await ch.waitForPeer(10_000)
const answer = await ch.request(Buffer.from(`from worker ${threadId}`), { timeoutMs: 10_000 })
let sent = 0
for (let i = 0; i < messages; i++) {
  const b = Buffer.alloc(64)
  b.writeUInt32LE(i, 0)
  if (ch.send(b)) sent++
}
parentPort.postMessage({ answer: answer.toString(), sent, pid: process.pid })
if (leave === 'close') {
  await ch.close()
  parentPort.postMessage({ closed: true })
} else if (leave === 'exit') {
  // Let the messages reach the ring before leaving: exit only once nothing is queued.
  while (ch.queuedBytes > 0) await new Promise((r) => setTimeout(r, 5))
  process.exit(0)
}
