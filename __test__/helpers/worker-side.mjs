// Runs in a worker_threads Worker: opens the channel named in workerData through the package's ES
// module entry, asks the peer process one request, sends it `messages` numbered messages, reports,
// then leaves the way workerData.leave says:
// - 'close': await close();
// - 'exit': process.exit() in the same tick as the sends, without close: the exit hook must write
//   out what the channel still holds and detach it;
// - 'stay': keeps the channel open until the parent terminates the worker. terminate() runs no JS,
//   so the report waits one turn of the event loop: what send() accepted is out of JS by then.
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
const report = { answer: answer.toString(), sent, pid: process.pid }
if (leave === 'close') {
  parentPort.postMessage(report)
  await ch.close()
  parentPort.postMessage({ closed: true })
} else if (leave === 'exit') {
  parentPort.postMessage(report)
  process.exit(0)
} else {
  await new Promise((r) => setImmediate(r))
  parentPort.postMessage(report)
}
