// Two processes, one channel. This process answers requests; the second one, which it starts
// itself, asks. Run: node examples/usage.mjs
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { open } from 'sharmipc' // or: const { open } = require('sharmipc')

if (process.argv[2] !== 'b') {
  // Process A
  const ch = open('orders', {
    onRequest: async (data, ctx) => Buffer.from(`got ${data.length} bytes`),
  })
  ch.on('message', (data) => console.log('A: message', data.toString()))
  const b = fork(fileURLToPath(import.meta.url), ['b']) // process B
  await once(b, 'exit')
  await ch.close()
} else {
  // Process B (the same calls work on either side)
  const ch = open('orders')
  await ch.waitForPeer(5000)
  const answer = await ch.request(Buffer.from('hello'), { timeoutMs: 5000 }) // Promise<Buffer>
  console.log('B: answer', answer.toString())
  ch.send(Buffer.from('fire and forget')) // true, or false when the queue is full
  const now = ch.requestSync(Buffer.from('blocking'), { timeoutMs: 1000 }) // Buffer; blocks this thread
  console.log('B: blocking answer', now.toString())
  await ch.close() // returns once A has the message
}
