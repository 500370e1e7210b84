// Two processes, one channel: round trips and throughput over shared memory.
// Run: npm start  (this script starts its own second process)
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { open } = require('sharmipc')

const [role, name = `demo-${process.pid}`] = process.argv.slice(2)

if (role === 'peer') {
  // The second process: echoes requests, counts messages, says when it has as many as expected.
  const ch = open(name, { onRequest: (data) => data })
  let expected = Infinity
  let count = 0
  ch.on('message', () => {
    if (++count === expected) process.send({ done: count })
  })
  process.on('message', async (m) => {
    if (m.expect !== undefined) {
      count = 0
      expected = m.expect
      process.send({ ready: true })
    } else if (m.exit) {
      await ch.close()
      process.exit(0)
    }
  })
  process.send({ ready: true })
} else {
  const ch = open(name)
  const peer = fork(fileURLToPath(import.meta.url), ['peer', name])
  const reply = () => once(peer, 'message').then(([m]) => m)
  await reply()
  await ch.waitForPeer(5000)
  console.log(
    `channel ${name}: two processes (pids ${process.pid} and ${peer.pid}), ring ${ch.capacity} bytes per direction\n`,
  )

  const fmt = (n) => Math.round(n).toLocaleString('en-US')
  const rate = (n, ms) => (n * 1000) / ms

  // 1. Sequential round trips: one request in flight.
  const one = Buffer.alloc(1)
  for (let i = 0; i < 2000; i++) await ch.request(one)
  const lat = []
  let t = performance.now()
  for (let i = 0; i < 20_000; i++) {
    const s = performance.now()
    await ch.request(one)
    lat.push(performance.now() - s)
  }
  let ms = performance.now() - t
  lat.sort((a, b) => a - b)
  console.log(
    `sequential RPC, 1 B:        ${fmt(rate(20_000, ms))} round trips/s  (p50 ${(lat[10_000] * 1000).toFixed(1)} µs, p99 ${(lat[19_800] * 1000).toFixed(1)} µs)`,
  )

  // 2. Pipelined round trips: up to 256 requests in flight.
  for (const size of [1, 512, 10_000]) {
    const data = Buffer.alloc(size, 7)
    const total = size >= 10_000 ? 50_000 : 200_000
    let sent = 0
    t = performance.now()
    await new Promise((resolve, reject) => {
      let inFlight = 0
      let done = 0
      const pump = () => {
        while (inFlight < 256 && sent < total) {
          inFlight++
          sent++
          ch.request(data).then(() => {
            inFlight--
            if (++done === total) resolve()
            else pump()
          }, reject)
        }
      }
      pump()
    })
    ms = performance.now() - t
    console.log(
      `RPC, ${String(size).padEnd(6)} B, 256 in flight: ${fmt(rate(total, ms))} calls/s, ${(rate(total * size * 2, ms) / 1e6).toFixed(1)} MB/s both ways`,
    )
  }

  // 3. Send-and-forget, counted when the receiver has them.
  for (const size of [1, 512, 10_000]) {
    const data = Buffer.alloc(size, 3)
    const total = size >= 10_000 ? 100_000 : 1_000_000
    peer.send({ expect: total })
    await reply()
    const finished = reply()
    t = performance.now()
    let sent = 0
    while (sent < total) {
      if (ch.send(data)) sent++
      else await new Promise((r) => setImmediate(r))
    }
    await finished
    ms = performance.now() - t
    console.log(
      `send-and-forget, ${String(size).padEnd(6)} B: ${fmt(rate(total, ms))} messages/s, ${(rate(total * size, ms) / 1e6).toFixed(1)} MB/s received`,
    )
  }

  peer.send({ exit: true })
  await once(peer, 'exit')
  await ch.close()
  console.log('\nboth sides closed; the segment is removed.')
}
