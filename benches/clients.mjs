// Many clients, one server: N client processes calling one server process, sharmipc's serve() and
// connect() against a Node `net` server on a Unix socket with one connection per client, in one run.
//
//   npx sharmipc bench --many [--clients 1,4,16] [--inflight N] [--size B] [--ms N] [--rounds N] [--busy]
//   npx sharmipc bench --many --idle N [--per-process K]
//   (or node benches/clients.mjs with the same options)
//
// Calls (the default): this process is the server, answering each request with its bytes. For each
// count of clients, N processes each keep `--inflight` requests (default 32) going for `--ms`, all
// starting together; a client records each call's round trip. Figures: the calls/s of all clients
// together, and the p50 and p99 round trip of the client with the worst p99. Transports take turns
// round by round; each figure is the median of the rounds. `--busy`: with a CPU hog per core but
// one, started here (benches/hogs.mjs).
//
// Idle (--idle N): N clients (connect() calls, `--per-process` per client process, default 50)
// connected to a server in this process and idle: what the server process holds for them (threads,
// RSS, file descriptors, /dev/shm) and the CPU both sides spend while idle. Linux only.
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import net from 'node:net'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { createHistogram } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseArgs as parseArgv } from 'node:util'

import { startHogs } from './hogs.mjs'
import { now } from './loops.mjs'
import { ANSWER, deframer, frame, transports } from './transports.mjs'

const require = createRequire(import.meta.url)
const self = fileURLToPath(import.meta.url)
const TRANSPORTS = ['sharmipc', 'uds']

export const USAGE = `usage: sharmipc bench --many [--clients 1,4,16] [--inflight N] [--size B] [--ms N] [--rounds N] [--busy]
       sharmipc bench --many --idle N [--per-process K]`

class UsageError extends Error {
  name = 'UsageError'
}

// ---------------------------------------------------------------------------------------------
// A client process: connects, waits for 'go', calls for `ms`, reports.
// ---------------------------------------------------------------------------------------------

async function client() {
  const [transport, where, inflight, size, ms, count] = process.argv.slice(3)
  const payload = Buffer.alloc(Number(size), 7)
  const chans = []
  for (let i = 0; i < Number(count ?? 1); i++) {
    if (transport === 'sharmipc') {
      const { connect } = require('sharmipc')
      const ch = connect(where, { onRequest: (d) => d })
      await ch.waitForPeer(60_000)
      chans.push({ request: (b) => ch.request(b, { timeoutMs: 60_000 }), close: () => ch.close() })
    } else {
      chans.push(await transports.uds.connect('b', { path: where }, {}))
    }
  }
  process.send({ ready: true })
  const [cmd] = await once(process, 'message')
  if (cmd.op === 'go') {
    const t = chans[0]
    const h = createHistogram()
    const start = now()
    const stop = start + BigInt(Math.round(Number(ms) * 1e6))
    let calls = 0
    const loop = async () => {
      while (now() < stop) {
        const t0 = now()
        await t.request(payload)
        h.record(now() - t0 || 1n)
        calls++
      }
    }
    await Promise.all(Array.from({ length: Number(inflight) }, loop))
    const elapsedNs = Number(now() - start)
    process.send({ calls, elapsedNs, p50: h.percentile(50) / 1000, p99: h.percentile(99) / 1000 })
    await once(process, 'message')
  }
  for (const t of chans) await t.close()
  process.exit(0)
}

// ---------------------------------------------------------------------------------------------
// The server side, in this process
// ---------------------------------------------------------------------------------------------

let serial = 0

async function startServer(transport) {
  serial++
  if (transport === 'sharmipc') {
    const { serve } = require('sharmipc')
    const name = `clients-${process.pid}-${serial}`
    const server = serve(name, { maxClients: 1024, onRequest: (d) => d })
    return { where: name, server, close: () => server.close() }
  }
  const where =
    process.platform === 'win32'
      ? `\\\\.\\pipe\\sharmipc-clients-${process.pid}-${serial}`
      : path.join(os.tmpdir(), `sharmipc-clients-${process.pid}-${serial}.sock`)
  const server = net.createServer((sock) => {
    sock.setNoDelay(true)
    sock.on('error', () => {})
    sock.on(
      'data',
      deframer((id, payload) => sock.write(frame((id | ANSWER) >>> 0, payload))),
    )
  })
  server.listen(where)
  await once(server, 'listening')
  return {
    where,
    close: async () => {
      await new Promise((r) => server.close(r))
      if (process.platform !== 'win32') rmSync(where, { force: true })
    },
  }
}

function startClients(transport, where, n, args) {
  return Array.from({ length: n }, () => {
    const c = fork(self, ['--client', transport, where, ...args.map(String)], { stdio: 'inherit' })
    return { c, ready: once(c, 'message') }
  })
}

/** One measurement: `n` clients of `transport` calling for `ms`. */
async function measure(transport, n, o) {
  const server = await startServer(transport)
  const clients = startClients(transport, server.where, n, [o.inflight, o.size, o.ms, 1])
  try {
    await Promise.all(clients.map((x) => x.ready))
    const results = clients.map((x) => once(x.c, 'message'))
    for (const x of clients) x.c.send({ op: 'go' })
    const got = (await Promise.all(results)).map(([m]) => m)
    for (const x of clients) x.c.send({ op: 'close' })
    await Promise.all(clients.map((x) => once(x.c, 'exit')))
    const calls = got.reduce((s, r) => s + r.calls, 0)
    const elapsedNs = Math.max(...got.map((r) => r.elapsedNs))
    const worst = got.reduce((a, b) => (b.p99 > a.p99 ? b : a))
    return { rate: (calls * 1e9) / elapsedNs, p50: worst.p50, p99: worst.p99 }
  } finally {
    for (const x of clients) if (x.c.exitCode === null) x.c.kill('SIGKILL')
    await server.close()
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const fmt = (n) => Math.round(n).toLocaleString('en-US')

async function calls(o) {
  const cores = os.availableParallelism()
  const stopHogs = o.busy ? await startHogs(Math.max(1, cores - 1)) : null
  try {
    const runs = {}
    for (let r = 0; r < o.rounds; r++) {
      for (const n of o.clients) {
        for (const t of TRANSPORTS) {
          process.stderr.write(`round ${r + 1}/${o.rounds}: ${n} clients, ${t}\n`)
          ;(runs[`${n}/${t}`] ??= []).push(await measure(t, n, o))
        }
      }
    }
    const what = `${o.size} B requests, ${o.inflight} in flight per client, ${o.ms} ms, median of ${o.rounds}`
    console.log(
      `\nMany clients, one server (${what}; ${cores} cores${o.busy ? `, ${Math.max(1, cores - 1)} CPU hog(s)` : ''})\n`,
    )
    console.log(
      '| clients | sharmipc calls/s | Unix socket calls/s | ratio | sharmipc p50 / p99 (µs) | socket p50 / p99 (µs) |',
    )
    console.log(
      '| ------: | ---------------: | ------------------: | ----: | ----------------------: | --------------------: |',
    )
    const report = []
    for (const n of o.clients) {
      const pick = (t) => {
        const xs = runs[`${n}/${t}`]
        return {
          rate: median(xs.map((x) => x.rate)),
          p50: median(xs.map((x) => x.p50)),
          p99: median(xs.map((x) => x.p99)),
        }
      }
      const s = pick('sharmipc')
      const u = pick('uds')
      report.push({ clients: n, sharmipc: s, uds: u, ratio: s.rate / u.rate })
      console.log(
        `| ${n} | ${fmt(s.rate)} | ${fmt(u.rate)} | ${(s.rate / u.rate).toFixed(2)}x | ${fmt(s.p50)} / ${fmt(s.p99)} | ${fmt(u.p50)} / ${fmt(u.p99)} |`,
      )
    }
    return report
  } finally {
    await stopHogs?.()
  }
}

// ---------------------------------------------------------------------------------------------
// Idle cost (--idle)
// ---------------------------------------------------------------------------------------------

function probe() {
  const status = readFileSync('/proc/self/status', 'utf8')
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0)
  return {
    threads: readdirSync('/proc/self/task').length,
    fds: readdirSync('/proc/self/fd').length,
    rss: kb('VmRSS') * 1024,
    shm: kb('RssShmem') * 1024,
  }
}

function shmBytes(prefix) {
  let total = 0
  for (const f of readdirSync('/dev/shm')) {
    if (!f.startsWith(prefix)) continue
    try {
      total += statSync(`/dev/shm/${f}`).blocks * 512
    } catch {}
  }
  return total
}

async function idle(o) {
  if (process.platform !== 'linux') throw new UsageError('--idle reads /proc: Linux only')
  const before = probe()
  const server = await startServer('sharmipc')
  const procs = Math.ceil(o.idle / o.perProcess)
  const clients = Array.from({ length: procs }, (_, i) => {
    const k = Math.min(o.perProcess, o.idle - i * o.perProcess)
    const c = fork(self, ['--client', 'sharmipc', server.where, 1, 1, 0, k], { stdio: 'inherit' })
    return { c, ready: once(c, 'message') }
  })
  try {
    await Promise.all(clients.map((x) => x.ready))
    while (server.server.clients.length < o.idle) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 1000))
    const connected = probe()
    const cpu0 = process.cpuUsage()
    const kids0 = clients.map((x) => cpuOf(x.c.pid))
    const t0 = now()
    await new Promise((r) => setTimeout(r, o.ms))
    const wall = Number(now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    const kids = clients.reduce((s, x, i) => s + cpuOf(x.c.pid) - kids0[i], 0)
    const shm = shmBytes(`sharm.${server.where}`)
    const per = (a, b) => (a - b) / o.idle
    console.log(
      `\n${o.idle} idle clients (${procs} client processes), one server; ${os.availableParallelism()} cores\n`,
    )
    console.log('| server process                  | before | with the clients | per client |')
    console.log('| ------------------------------- | -----: | ---------------: | ---------: |')
    console.log(
      `| threads                         | ${before.threads} | ${connected.threads} | ${per(connected.threads, before.threads).toFixed(2)} |`,
    )
    console.log(
      `| file descriptors                | ${before.fds} | ${connected.fds} | ${per(connected.fds, before.fds).toFixed(2)} |`,
    )
    console.log(
      `| RSS (MB)                        | ${(before.rss / 1e6).toFixed(1)} | ${(connected.rss / 1e6).toFixed(1)} | ${(per(connected.rss, before.rss) / 1e3).toFixed(1)} kB |`,
    )
    console.log(
      `| of which shared memory (MB)     | ${(before.shm / 1e6).toFixed(1)} | ${(connected.shm / 1e6).toFixed(1)} | ${(per(connected.shm, before.shm) / 1e3).toFixed(1)} kB |`,
    )
    console.log(
      `| /dev/shm used (MB)              |  | ${(shm / 1e6).toFixed(1)} | ${(shm / o.idle / 1e3).toFixed(1)} kB |`,
    )
    console.log(`| idle CPU, server (% of a core)  |  | ${(((cpu.user + cpu.system) / wall) * 100).toFixed(1)} | |`)
    console.log(`| idle CPU, all clients (% of a core) |  | ${((kids / wall) * 100).toFixed(1)} | |`)
  } finally {
    for (const x of clients) x.c.send({ op: 'close' })
    await Promise.all(clients.map((x) => (x.c.exitCode === null ? once(x.c, 'exit') : null)))
    await server.close()
  }
}

/** CPU time (µs) of process `pid` so far, from /proc. */
function cpuOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100 // utime + stime, in clock ticks of 1/100 s
}

// ---------------------------------------------------------------------------------------------

const OPTIONS = {
  clients: { type: 'string', default: '1,4,16' },
  inflight: { type: 'string', default: '32' },
  size: { type: 'string', default: '1' },
  ms: { type: 'string' },
  rounds: { type: 'string', default: '3' },
  busy: { type: 'boolean', default: false },
  idle: { type: 'string' },
  'per-process': { type: 'string', default: '50' },
  help: { type: 'boolean', default: false },
}

function count(v, what) {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`${what} must be a positive integer, got ${JSON.stringify(v)}`)
  return n
}

export async function main(argv = process.argv.slice(2)) {
  let values
  try {
    ;({ values } = parseArgv({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }))
  } catch (e) {
    throw new UsageError(e.message)
  }
  if (values.help) return console.log(USAGE)
  if (values.idle !== undefined) {
    return idle({
      idle: count(values.idle, '--idle'),
      perProcess: count(values['per-process'], '--per-process'),
      ms: count(values.ms ?? '5000', '--ms'),
    })
  }
  return calls({
    clients: values.clients.split(',').map((c) => count(c, '--clients')),
    inflight: count(values.inflight, '--inflight'),
    size: count(values.size, '--size'),
    ms: count(values.ms ?? '1500', '--ms'),
    rounds: count(values.rounds, '--rounds'),
    busy: values.busy,
  })
}

if (process.argv[2] === '--client') await client()
else if (process.argv[1] === self) {
  main().catch((e) => {
    console.error(e.name === 'UsageError' ? `${e.message}\n${USAGE}` : e)
    process.exitCode = 1
  })
}
