// Soak: mixed traffic both ways for a while, with the peer process replaced every few seconds,
// killed with SIGKILL two times out of three and closed the third time.
// Usage: node scripts/soak.mjs [seconds=60] [restartEveryMs=5000]
//
// It checks the delivery guarantee in both directions:
// - to the peer: every message this side accepted was delivered to a peer exactly once, or
//   handed back (a 'disconnect' event's `undelivered`, or close's error), never both; messages
//   handed back as `inDoubt` may be either. Each peer logs the first and last number it
//   delivered with a synchronous write per message, so the log survives SIGKILL.
// - from the peer: each peer's messages arrive in order with no gap and no duplicate; for a peer
//   that closes, what it accepted was delivered here or handed back to it, never both. (What a
//   killed peer had accepted but not yet written to shared memory dies with it.)
// Requests run in 8 loops; every answer must be the request's own data.
// Prints a progress line per restart and a final JSON report; exits 1 if any check fails or RSS
// grew by more than RSS_BOUND_MB.
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

const require = createRequire(import.meta.url)
const { open } = require('sharmipc')
const RSS_BOUND_MB = 64
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const args = process.argv.slice(2)

/** A message: [peer index (u32), number (u32), padding]. */
function numbered(from, n) {
  const b = Buffer.alloc(16 + (n % 512))
  b.writeUInt32LE(from, 0)
  b.writeUInt32LE(n, 4)
  return b
}

if (args[0] === 'peer') {
  // The replaceable side: echoes requests, logs what it delivered, sends numbered messages back.
  const [, name, index, logPath] = args
  const fd = openSync(logPath, 'w')
  // first delivered, last delivered, gaps (int32 each); -1: none yet.
  const state = Buffer.alloc(12)
  state.writeInt32LE(-1, 0)
  state.writeInt32LE(-1, 4)
  writeSync(fd, state, 0, 12, 0)
  let last = -1
  const ch = open(name, { onRequest: (data) => data })
  ch.on('message', (m) => {
    const n = m.readUInt32LE(4)
    if (last < 0) {
      state.writeInt32LE(n, 0)
      writeSync(fd, state, 0, 4, 0)
    } else if (n !== last + 1) {
      state.writeInt32LE(state.readInt32LE(8) + 1, 8)
      writeSync(fd, state, 8, 4, 8)
    }
    last = n
    state.writeInt32LE(n, 4)
    writeSync(fd, state, 4, 4, 4)
  })
  const back = { undelivered: [], inDoubt: [] }
  const collect = (r) => {
    for (const b of r.undelivered ?? []) back.undelivered.push(b.readUInt32LE(4))
    for (const b of r.inDoubt ?? []) back.inDoubt.push(b.readUInt32LE(4))
  }
  ch.on('disconnect', collect)
  ch.on('error', collect)
  let sending = true
  let accepted = 0
  const sender = (async () => {
    await ch.waitForPeer()
    while (sending) {
      if (ch.send(numbered(Number(index), accepted))) {
        accepted++
        if (accepted % 256 === 0) await new Promise((r) => setImmediate(r))
      } else {
        await sleep(1)
      }
    }
  })()
  process.on('message', async (m) => {
    if (m === 'stop') {
      sending = false
      await sender
      await ch.close()
      closeSync(fd)
      process.send({ accepted, ...back }, () => process.exit(0))
    }
  })
  process.send('ready')
} else {
  const seconds = Number(args[0] ?? 60)
  const restartEveryMs = Number(args[1] ?? 5000)
  const name = `soak-${process.pid}`
  const dir = mkdtempSync(path.join(tmpdir(), 'sharmipc-soak-'))
  // A small queue: requests wait behind the messages in it (the peers log every message).
  const ch = open(name, { timeoutMs: 5000, maxQueueBytes: 1 << 20 })
  const s = {
    sent: 0,
    delivered: 0,
    handedBack: 0,
    inDoubt: 0,
    missing: 0,
    deliveredAndHandedBack: 0,
    deliveredTwice: 0,
    peerGaps: 0,
    received: 0,
    receivedOutOfOrder: 0,
    peerMissing: 0,
    answered: 0,
    wrong: 0,
    failedRequests: 0,
    queueFull: 0,
    kills: 0,
    closes: 0,
    errors: 0,
  }
  // One bit per message number, allocated before RSS is first taken (the bound is on the
  // library's memory, not on this bookkeeping).
  const bits = (n) => {
    const a = new Uint8Array(n >> 3)
    a.fill(0)
    return {
      add: (i) => (a[i >> 3] |= 1 << (i & 7)),
      has: (i) => (a[i >> 3] & (1 << (i & 7))) !== 0,
      count: (upto) => {
        let c = 0
        for (let i = 0; i < upto; i++) if (a[i >> 3] & (1 << (i & 7))) c++
        return c
      },
    }
  }
  const MAX_MESSAGES = 2 ** 27
  const handedBack = bits(MAX_MESSAGES)
  const inDoubt = bits(MAX_MESSAGES)
  const collect = (r) => {
    for (const b of r.undelivered ?? []) handedBack.add(b.readUInt32LE(4))
    for (const b of r.inDoubt ?? []) inDoubt.add(b.readUInt32LE(4))
  }
  ch.on('disconnect', collect)
  ch.on('error', (e) => {
    collect(e)
    if (e.code !== 'ERR_SHARM_PEER_GONE') {
      s.errors++
      console.error('error event:', e.message)
    }
  })
  // Per peer: the next number expected from it.
  const nextFrom = []
  ch.on('message', (m) => {
    const from = m.readUInt32LE(0)
    const n = m.readUInt32LE(4)
    s.received++
    if (n !== (nextFrom[from] ?? 0)) s.receivedOutOfOrder++
    nextFrom[from] = n + 1
  })
  let running = true
  const messages = (async () => {
    while (running && s.sent < MAX_MESSAGES) {
      if (ch.send(numbered(0, s.sent))) {
        s.sent++
        if (s.sent % 256 === 0) await new Promise((r) => setImmediate(r))
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
      } catch (e) {
        if (e.code === 'ERR_SHARM_QUEUE_FULL') {
          // Refused at once (the messages fill the queue): wait a little, do not spin.
          s.queueFull++
          await sleep(1)
          continue
        }
        if (e.code !== 'ERR_SHARM_PEER_GONE') throw e
        s.failedRequests++ // the peer it went to left before answering: reported, not lost
        if (running && !ch.connected) await ch.waitForPeer(10_000).catch(() => {})
      }
    }
  })
  const peers = []
  const startPeer = async () => {
    const index = peers.length + 1
    const log = path.join(dir, `peer-${index}.log`)
    const p = fork(fileURLToPath(import.meta.url), ['peer', name, String(index), log])
    peers.push({ index, log, p })
    await once(p, 'message')
    await ch.waitForPeer(10_000)
    return peers.at(-1)
  }
  const stopPeer = async (peer, kill) => {
    if (kill) {
      s.kills++
      const exited = once(peer.p, 'exit')
      peer.p.kill('SIGKILL')
      await exited
      return
    }
    s.closes++
    peer.p.send('stop')
    const [r] = await once(peer.p, 'message')
    // What it accepted was delivered here or handed back to it, never both.
    const got = nextFrom[peer.index] ?? 0
    const back = new Set(r.undelivered)
    const doubt = new Set(r.inDoubt)
    for (let n = 0; n < r.accepted; n++) {
      if (n < got && back.has(n)) s.deliveredAndHandedBack++
      if (n >= got && !back.has(n) && !doubt.has(n)) s.peerMissing++
    }
  }
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc')
  const rssMb = (collectFirst = false) => {
    if (collectFirst) gc()
    return process.memoryUsage().rss / 2 ** 20
  }
  const started = Date.now()
  let peer = await startPeer()
  // RSS is taken after a warm-up of a quarter of the run that includes a restart: the queue, the
  // batch buffers, the heap and a departure's hand-back reach their working size (measured:
  // RSS levels off after the first few restarts). The bound is on growth after that.
  let rssStart = null
  let restarts = 0
  while (Date.now() - started < seconds * 1000) {
    await sleep(Math.min(restartEveryMs, Math.max(0, seconds * 1000 - (Date.now() - started))))
    if (Date.now() - started >= seconds * 1000) break
    await stopPeer(peer, restarts % 3 !== 2)
    restarts++
    peer = await startPeer()
    if (rssStart === null && Date.now() - started >= (seconds * 1000) / 4) rssStart = rssMb(true)
    console.log(
      `[${((Date.now() - started) / 1000).toFixed(0)} s] restarts ${restarts} (${s.kills} killed), sent ${s.sent}, answered ${s.answered}, rss ${rssMb().toFixed(0)} MB`,
    )
  }
  running = false
  await messages
  await Promise.all(requests)
  // close waits until the last peer delivered everything (or hands back the rest), then it stops.
  await ch.close()
  await stopPeer(peer, false)
  const rssEnd = rssMb(true)
  rssStart ??= rssEnd
  // To the peers: each number delivered by exactly one peer (its log holds the range it
  // delivered, in order), or handed back, never both.
  const delivered = bits(MAX_MESSAGES)
  for (const { log } of peers) {
    const b = readFileSync(log)
    s.peerGaps += Math.max(0, b.readInt32LE(8))
    const [first, last] = [b.readInt32LE(0), b.readInt32LE(4)]
    for (let n = first; first >= 0 && n <= last; n++) {
      if (delivered.has(n)) s.deliveredTwice++
      delivered.add(n)
    }
  }
  for (let n = 0; n < s.sent; n++) {
    const d = delivered.has(n)
    if (d) s.delivered++
    if (d && handedBack.has(n)) s.deliveredAndHandedBack++
    if (!d && !handedBack.has(n) && !inDoubt.has(n)) s.missing++
  }
  s.handedBack = handedBack.count(s.sent)
  s.inDoubt = inDoubt.count(s.sent)
  rmSync(dir, { recursive: true, force: true })
  const report = {
    seconds,
    ...s,
    rssStartMb: +rssStart.toFixed(1),
    rssEndMb: +rssEnd.toFixed(1),
    rssBoundMb: RSS_BOUND_MB,
  }
  console.log(JSON.stringify(report))
  const ok =
    s.missing === 0 &&
    s.deliveredAndHandedBack === 0 &&
    s.deliveredTwice === 0 &&
    s.peerGaps === 0 &&
    s.receivedOutOfOrder === 0 &&
    s.peerMissing === 0 &&
    s.wrong === 0 &&
    s.errors === 0 &&
    rssEnd - rssStart <= RSS_BOUND_MB
  console.log(ok ? 'soak passed' : 'soak FAILED')
  process.exit(ok ? 0 : 1)
}
