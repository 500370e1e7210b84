// Spreading load over K channels between two processes: both open the same K names and each side
// picks a channel per call, round-robin, or by a key when related messages must stay in order.
// Run: node examples/spread.mjs (it starts the second process itself)
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { open } from 'sharmipc'

/** K channels `${prefix}-0` .. `${prefix}-${k - 1}`; the other process calls it with the same arguments. */
function openSpread(prefix, k, options) {
  const channels = Array.from({ length: k }, (_, i) => open(`${prefix}-${i}`, options))
  let next = 0
  const pick = (key) => channels[key === undefined ? next++ % k : key % k]
  return {
    channels,
    request: (data, opts, key) => pick(key).request(data, opts),
    // messages with the same key go in order; without a key, no order across channels
    async send(data, key) {
      const ch = pick(key)
      while (!ch.send(data)) await once(ch, 'drain')
    },
    close: () => Promise.all(channels.map((ch) => ch.close())),
  }
}

const me = process.argv[2] === 'b' ? 'B' : 'A'
const handle = (data) => Buffer.from(`${me} handled ${data}`)

const orders = openSpread('orders', 4, { onRequest: (data) => handle(data) })
const b = me === 'A' ? fork(fileURLToPath(import.meta.url), ['b']) : null
const aIsDone = me === 'B' ? once(process, 'message') : null
await Promise.all(orders.channels.map((ch) => ch.waitForPeer(5000)))
for (let i = 0; i < 4; i++) console.log((await orders.request(Buffer.from(`order ${i} of ${me}`))).toString())
if (b) {
  b.send('done') // B closes once A's requests are answered
  await once(b, 'exit')
} else await aIsDone
await orders.close()
