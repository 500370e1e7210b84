// Soak: mixed traffic for a while, with the peer process replaced every few seconds.
// Usage: node scripts/soak.mjs [seconds=60] [restartEveryMs=5000]
// Prints a progress line per restart and a final JSON report; exits 1 if any message was lost,
// any answer was wrong, or RSS grew by more than RSS_BOUND_MB.
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { open } = require('sharmipc')
const RSS_BOUND_MB = 64
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const args = process.argv.slice(2)

if (args[0] === 'peer') {
  // The replaceable side: echoes requests, counts messages, reports the count once closed.
  const ch = open(args[1], { onRequest: (data) => data })
  let received = 0
  ch.on('message', () => received++)
  process.on('message', async (m) => {
    if (m === 'stop') {
      await ch.close()
      process.send({ received }, () => process.exit(0))
    }
  })
  process.send('ready')
} else {
  const seconds = Number(args[0] ?? 60)
  const restartEveryMs = Number(args[1] ?? 5000)
  const name = `soak-${process.pid}`
  const ch = open(name, { timeoutMs: 5000 })
  const s = { sent: 0, received: 0, unconfirmed: 0, answered: 0, wrong: 0, failedRequests: 0, restarts: 0, errors: 0 }
  ch.on('disconnect', (info) => (s.unconfirmed += info.unconfirmed))
  ch.on('error', (e) => {
    s.errors++
    console.error('error event:', e.message)
  })
  let running = true
  const messages = (async () => {
    for (let i = 0; running;) {
      const b = Buffer.alloc(16 + (i % 1024))
      b.writeUInt32LE(i, 0)
      if (ch.send(b)) {
        s.sent++
        i++
        if (i % 256 === 0) await new Promise((r) => setImmediate(r))
      } else {
        await sleep(1)
      }
    }
  })()
  const requests = Array.from({ length: 8 }, async (_, k) => {
    for (let j = 0; running; j++) {
      const payload = Buffer.from(`request ${k}/${j}`)
      try {
        const answer = await ch.request(payload)
        if (answer.equals(payload)) s.answered++
        else s.wrong++
      } catch {
        s.failedRequests++ // the peer was replaced while it was pending: reported, not lost
        if (running && !ch.connected) await ch.waitForPeer(10_000).catch(() => {})
      }
    }
  })
  const startPeer = async () => {
    const p = fork(fileURLToPath(import.meta.url), ['peer', name])
    await once(p, 'message')
    await ch.waitForPeer(10_000)
    return p
  }
  const stopPeer = async (p) => {
    const gone = once(ch, 'disconnect')
    p.send('stop')
    const [r] = await once(p, 'message')
    s.received += r.received
    await gone
  }
  const rssMb = () => process.memoryUsage().rss / 2 ** 20
  const started = Date.now()
  let peer = await startPeer()
  // RSS is taken after a warm-up in which the queue, the batch buffers and the heap reach their
  // working size; the bound is on growth after that.
  await sleep(Math.min(3000, seconds * 100))
  const rssStart = rssMb()
  while (Date.now() - started < seconds * 1000) {
    await sleep(Math.min(restartEveryMs, Math.max(0, seconds * 1000 - (Date.now() - started))))
    if (Date.now() - started >= seconds * 1000) break
    await stopPeer(peer)
    peer = await startPeer()
    s.restarts++
    console.log(
      `[${((Date.now() - started) / 1000).toFixed(0)} s] restarts ${s.restarts}, sent ${s.sent}, received ${s.received}, answered ${s.answered}, rss ${rssMb().toFixed(0)} MB`,
    )
  }
  running = false
  await messages
  // Let the last peer take everything that is still queued, then stop it.
  while (ch.queuedBytes > 0) await sleep(10)
  await stopPeer(peer)
  await Promise.all(requests)
  await ch.close()
  const rssEnd = rssMb()
  const lost = s.sent - s.received - s.unconfirmed
  const report = {
    seconds,
    ...s,
    lost,
    rssStartMb: +rssStart.toFixed(1),
    rssEndMb: +rssEnd.toFixed(1),
    rssBoundMb: RSS_BOUND_MB,
  }
  console.log(JSON.stringify(report))
  const ok = lost === 0 && s.wrong === 0 && rssEnd - rssStart <= RSS_BOUND_MB
  console.log(ok ? 'soak passed' : 'soak FAILED')
  process.exit(ok ? 0 : 1)
}
