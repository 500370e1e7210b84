// Iterating incoming messages with backpressure: while the loop body runs, nothing more is read
// from the ring, so a fast sender sees send() return false and waits for 'drain'.
// Run: node examples/messages.mjs (it starts the sending process itself)
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { open } from 'sharmipc'

const COUNT = 300

if (process.argv[2] !== 'sender') {
  const ch = open('events', { capacity: 4096 }) // a small ring, to see backpressure soon
  const sender = fork(fileURLToPath(import.meta.url), ['sender'])
  const senderExited = once(sender, 'exit')
  const ac = new AbortController() // ac.abort() would end the loop with an AbortError
  let n = 0
  for await (const data of ch.messages({ signal: ac.signal })) {
    await sleep(1) // slow work: nothing more is read from the ring meanwhile
    if (data.toString() !== `event ${n}`) throw new Error(`out of order: ${data}`)
    if (++n === COUNT) break
  }
  console.log(`handled ${n} messages in order`)
  await senderExited
  await ch.close()
} else {
  const ch = open('events', { maxQueueBytes: 1024 })
  await ch.waitForPeer(5000)
  let waited = 0
  for (let i = 0; i < COUNT; i++) {
    if (!ch.send(`event ${i}`)) {
      waited++ // the reader is behind: this message was not taken; wait and send it again
      await once(ch, 'drain')
      i--
    }
  }
  console.log(`sent ${COUNT} events, waited for 'drain' ${waited} times`)
  await ch.close()
}
