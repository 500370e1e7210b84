// sharmipc benchmarks, side by side with the baselines, in one invocation.
//
//   npm run bench [-- --quick] [--rounds N] [--ms N] [--only ID[,ID...]] [--out DIR] [--svg FILE] [--goals] [--pin]
//   npm run bench -- --replot bench.json [--svg FILE] [--goals]   (table and chart of an earlier run)
//   npm run bench -- --spread [options of benches/spread.mjs]     (several channels; --spread --help)
//   npm run bench -- --many [options of benches/clients.mjs]      (many clients, one server; --many --help)
//   (--only keeps the scenarios with one of the given ids, or whose id contains one of the strings)
//   npx sharmipc bench [same options]
//
// Every scenario runs between two real processes (this one and benches/peer.mjs), for sharmipc and
// for each baseline in turn, interleaved round by round; each figure is the median of the rounds.
// A message counts when the receiving process has it.
import { execFileSync, fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs as parseArgv } from 'node:util'

import { SEQ_WARM_UP_MS, asyncLoops, counter, now, pump, rpcLoop, sequential } from './loops.mjs'
import { transports } from './transports.mjs'
import { chart } from './chart.mjs'
import { startHogs } from './hogs.mjs'
import { LABELS, tableLines } from './report.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const MiB = 1 << 20

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

const IPC_ALL = ['sharmipc', 'uds', 'ipc']

/**
 * kind: send | send-duplex | rpc | rpc-duplex | seq | loops | idle. `goal`: the ratio sharmipc / best
 * baseline aimed at; `memcpyGoal`: the fraction of memcpy bandwidth aimed at; `ceilingGoal`: the
 * fraction of the in-process ceiling aimed at; `p99Goal`: sharmipc's p99 at most the socket's.
 * `hogs`: CPU hogs the bench starts for the scenario, 'all-but-one' (one per core but one, at least
 * one) or 'all' (one per core): a busy machine.
 */
export const SCENARIOS = [
  { id: 'send-1', kind: 'send', size: 1, goal: 10 },
  { id: 'send-512', kind: 'send', size: 512 },
  { id: 'send-10000', kind: 'send', size: 10_000, goal: 3, memcpy: true },
  { id: 'send-1MiB', kind: 'send', size: MiB, memcpy: true, memcpyGoal: 0.5 },
  { id: 'duplex-send-1', kind: 'send-duplex', size: 1, goalVs: 'send-1' },
  { id: 'duplex-send-512', kind: 'send-duplex', size: 512, goalVs: 'send-512' },
  { id: 'duplex-send-10000', kind: 'send-duplex', size: 10_000, goalVs: 'send-10000' },
  { id: 'rpc-1', kind: 'rpc', size: 1, inflight: 256, goal: 10 },
  { id: 'rpc-512', kind: 'rpc', size: 512, inflight: 256 },
  { id: 'rpc-10000', kind: 'rpc', size: 10_000, inflight: 256 },
  { id: 'rpc-1MiB', kind: 'rpc', size: MiB, inflight: 4 },
  { id: 'duplex-rpc-1', kind: 'rpc-duplex', size: 1, inflight: 256, goalVs: 'rpc-1' },
  { id: 'duplex-rpc-10000', kind: 'rpc-duplex', size: 10_000, inflight: 256, goalVs: 'rpc-10000' },
  { id: 'seq-1', kind: 'seq', size: 1, goal: 2 },
  { id: 'idle', kind: 'idle', size: 0, lowerIsBetter: true, transports: ['sharmipc', 'uds'] },
  { id: 'seq-1-latency', kind: 'seq', size: 1, goal: 5, transports: ['sharmipc-latency', 'uds', 'ipc'] },
  { id: 'loops-1', kind: 'loops', size: 1, loops: 256, goal: 5, ceilingGoal: 0.5 },
  // A busy machine: the same scenarios while other processes want every core (but one).
  { id: 'send-1-busy', kind: 'send', size: 1, hogs: 'all-but-one', goal: 1 },
  { id: 'rpc-1-busy', kind: 'rpc', size: 1, inflight: 256, hogs: 'all-but-one', goal: 1 },
  { id: 'loops-1-busy', kind: 'loops', size: 1, loops: 256, hogs: 'all-but-one', goal: 1 },
  { id: 'seq-1-busy', kind: 'seq', size: 1, hogs: 'all-but-one', goal: 2, p99Goal: true },
  {
    id: 'seq-1-latency-busy',
    kind: 'seq',
    size: 1,
    hogs: 'all-but-one',
    goal: 1,
    p99Goal: true,
    transports: ['sharmipc-latency', 'uds', 'ipc'],
  },
  { id: 'seq-1-busy-all', kind: 'seq', size: 1, hogs: 'all', goal: 1, p99Goal: true },
  {
    id: 'seq-1-latency-busy-all',
    kind: 'seq',
    size: 1,
    hogs: 'all',
    goal: 1,
    p99Goal: true,
    transports: ['sharmipc-latency', 'uds', 'ipc'],
  },
]

const label = (s) => LABELS[s.id] ?? s.id

// ---------------------------------------------------------------------------------------------
// One run: a fresh peer process, one transport, one scenario
// ---------------------------------------------------------------------------------------------

/** `--pin` (Linux): this process runs on core 0, each peer on core 1, and hogs anywhere. */
const PIN_BENCH = '0'
const PIN_PEER = '1'
let pinned = false
/** The cores the peers of this run could run on. */
const peerCores = new Set()

/** The cores process `pid` may run on, as Linux lists them (`0-3`, `1`). */
function coresOf(pid) {
  return /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 'unknown'
}

/** Runs `args` as a child process, on the peer's core under `--pin`; IPC as `fork` gives it. */
function child(args, options) {
  if (!pinned) return spawn(process.execPath, args, options)
  return spawn('taskset', ['-c', PIN_PEER, process.execPath, ...args], options)
}

/** Pins this process (every thread of it, and those it starts later) to core 0 for `--pin`. */
function pinThisProcess(cores) {
  if (process.platform !== 'linux') throw new UsageError(`--pin needs Linux (taskset), not ${process.platform}`)
  if (cores < 2) throw new UsageError(`--pin needs two cores, this machine has ${cores}`)
  try {
    execFileSync('taskset', ['-a', '-p', '-c', PIN_BENCH, String(process.pid)], { stdio: 'ignore' })
  } catch (e) {
    throw new UsageError(`--pin needs taskset (util-linux): ${e.message}`)
  }
  pinned = true
}

class Peer {
  constructor() {
    this.child = child([path.join(here, 'peer.mjs')], {
      serialization: 'advanced',
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    })
    this.waiters = new Map()
    this.child.on('message', (m) => {
      if (m?.ctl === undefined) return
      if (m.ctl === 'failed') {
        for (const w of this.waiters.values()) w.reject(new Error(`peer failed: ${m.error}`))
        this.waiters.clear()
        return
      }
      const w = this.waiters.get(m.ctl)
      if (w) {
        this.waiters.delete(m.ctl)
        w.resolve(m)
      }
    })
    this.exited = once(this.child, 'exit')
  }
  /** Resolves with the next control message `ctl` from the peer. */
  next(ctl) {
    return new Promise((resolve, reject) => this.waiters.set(ctl, { resolve, reject }))
  }
  send(m) {
    this.child.send({ ...m })
  }
}

let runNo = 0

async function runOne(transportId, s, ms) {
  const kind = transports[transportId]
  const peer = new Peer()
  await peer.next('started')
  if (pinned) peerCores.add(coresOf(peer.child.pid))
  runNo++
  const setup = {
    name: `bench-${process.pid}-${runNo}`,
    // Node's `net` on Windows listens on named pipes, not on paths in the file system.
    path:
      process.platform === 'win32'
        ? `\\\\.\\pipe\\sharmipc-bench-${process.pid}-${runNo}`
        : path.join(os.tmpdir(), `sharmipc-bench-${process.pid}-${runNo}.sock`),
  }
  const recv = counter()
  const payload = Buffer.alloc(s.size, 7)
  const connecting = kind.connect('a', { ...setup, port: peer.child }, { onMessage: recv.onMessage })
  const ready = peer.next('ready')
  peer.send({ ctl: 'setup', transport: transportId, setup })
  const t = await connecting
  await ready
  try {
    switch (s.kind) {
      case 'send': {
        peer.send({ ctl: 'recv' })
        await peer.next('receiving')
        const received = peer.next('received')
        const { sent, startNs } = await pump(t, payload, ms, kind.sendTakesOnFalse)
        const r = await received
        if (r.count !== sent) throw new Error(`${kind.name}: sent ${sent}, the peer received ${r.count}`)
        return { value: rate(sent, r.atNs - startNs), unit: 'msg/s' }
      }
      case 'send-duplex': {
        peer.send({ ctl: 'recv' })
        await peer.next('receiving')
        const received = peer.next('received')
        const pumped = peer.next('pumped')
        peer.send({ ctl: 'pump', size: s.size, ms })
        const mine = await pump(t, payload, ms, kind.sendTakesOnFalse)
        const [theirs, gotThere, gotHere] = await Promise.all([pumped, received, recv.done])
        if (gotThere.count !== mine.sent || gotHere.count !== theirs.sent) {
          throw new Error(`${kind.name}: a message was lost in full duplex`)
        }
        const a = rate(mine.sent, gotThere.atNs - mine.startNs)
        const b = rate(theirs.sent, gotHere.atNs - BigInt(theirs.startNs))
        return { value: (a + b) / 2, unit: 'msg/s', detail: { aToB: a, bToA: b } }
      }
      case 'rpc': {
        const r = await rpcLoop(t, payload, s.inflight, ms)
        return { value: rate(r.calls, r.elapsedNs), unit: 'calls/s' }
      }
      case 'rpc-duplex': {
        const theirs = peer.next('rpcDone')
        peer.send({ ctl: 'rpc', size: s.size, inflight: s.inflight, ms })
        const mine = await rpcLoop(t, payload, s.inflight, ms)
        const other = await theirs
        const a = rate(mine.calls, mine.elapsedNs)
        const b = rate(other.calls, BigInt(other.elapsedNs))
        return { value: (a + b) / 2, unit: 'calls/s', detail: { aToB: a, bToA: b } }
      }
      case 'loops': {
        const r = await asyncLoops((b) => t.request(b), payload, s.loops, ms)
        return { value: rate(r.calls, r.elapsedNs), unit: 'calls/s' }
      }
      case 'idle': {
        // Nothing is sent: CPU time both processes spend on an open, connected channel.
        await new Promise((r) => setTimeout(r, 200))
        const asked = peer.next('cpuIs')
        peer.send({ ctl: 'cpu' })
        const theirs0 = (await asked).usage
        const mine0 = process.cpuUsage()
        const t0 = now()
        await new Promise((r) => setTimeout(r, ms))
        const asked1 = peer.next('cpuIs')
        peer.send({ ctl: 'cpu' })
        const theirs1 = (await asked1).usage
        const mine1 = process.cpuUsage(mine0)
        const elapsedUs = Number(now() - t0) / 1000
        const peerUs = theirs1.user + theirs1.system - theirs0.user - theirs0.system
        return { value: ((peerUs + mine1.user + mine1.system) / elapsedUs) * 100, unit: '% CPU' }
      }
      case 'seq': {
        // Warm-up: the same calls for a while first, so that the round measures the steady state
        // of a long-running service (the JIT settled, and the waiting policy with it).
        await sequential(t, payload, Math.min(SEQ_WARM_UP_MS, ms))
        const { histogram: h, calls, elapsedNs } = await sequential(t, payload, ms)
        const us = (p) => h.percentile(p) / 1000
        return {
          value: rate(calls, elapsedNs),
          unit: 'calls/s',
          detail: { p50: us(50), p99: us(99), p999: us(99.9) },
        }
      }
    }
  } finally {
    const closed = peer.next('closed')
    peer.send({ ctl: 'close' })
    await Promise.race([closed, peer.exited])
    await t.close()
    await peer.exited
    if (process.platform !== 'win32') rmSync(setup.path, { force: true })
  }
}

const rate = (n, ns) => (n * 1e9) / Number(ns)

/**
 * The ceiling of the async-loops scenario: the same loops, in this one process, calling an async
 * function that copies the bytes (calls/s).
 */
async function inProcessCeiling(s, ms) {
  const copy = async (b) => Buffer.from(b)
  const r = await asyncLoops(copy, Buffer.alloc(s.size, 7), s.loops, ms)
  return rate(r.calls, r.elapsedNs)
}

/** How many CPU hogs a scenario's `hogs` asks for on this machine. */
function hogCount(hogs, cores) {
  if (!hogs) return 0
  return hogs === 'all' ? cores : Math.max(1, cores - 1)
}

/** Starts `n` CPU hogs (`hogs.mjs`); under --pin, anywhere: not on this process's core alone. */
function startBenchHogs(n) {
  return startHogs(n, { prefix: pinned ? ['taskset', '-c', `0-${os.cpus().length - 1}`] : [] })
}

/**
 * Single-thread copy bandwidth, MB/s: `size`-byte messages copied one after another into a 64 MiB
 * destination (cycled), as a receiver that keeps what it gets would write them.
 */
function memcpy(size, ms) {
  const dest = Buffer.alloc(64 * MiB)
  const src = Buffer.alloc(size, 7)
  const batch = Math.max(1, Math.floor(MiB / size))
  let off = 0
  let bytes = 0
  const start = now()
  const stop = start + BigInt(ms * 1e6)
  while (now() < stop) {
    for (let i = 0; i < batch; i++) {
      if (off + size > dest.length) off = 0
      src.copy(dest, off)
      off += size
    }
    bytes += batch * size
  }
  return rate(bytes, now() - start) / 1e6
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

/** A bad command line: the caller prints the message and the usage, and exits with 2. */
export class UsageError extends Error {
  name = 'UsageError'
}

export const USAGE = `usage: sharmipc bench [options]        (from a clone: npm run bench -- [options])

  --quick            one short round of each scenario (150 ms): does it run? (figures are rough)
  --rounds N         rounds per transport and scenario (default 3); each figure is the median
  --ms N             length of one round in milliseconds (default 1000)
  --only ID[,ID...]  run only these scenarios (an id, or a part of ids: --only rpc)
  --out DIR          where bench.json and bench.svg go (default .bench-out)
  --svg FILE         write the chart here instead
  --replot FILE      table and chart of an earlier run's bench.json, without measuring
  --goals            also show the figures the project aims at, and whether this run meets them
  --pin              (Linux) this process on core 0 and its peer on core 1, with taskset
  --spread [...]     the several-channels bench instead (benches/spread.mjs; --spread --help)
  --many [...]       the many-clients bench instead: N clients calling one server (benches/clients.mjs; --many --help)
  -h, --help         this text

scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}`

const OPTIONS = {
  quick: { type: 'boolean', default: false },
  rounds: { type: 'string' },
  ms: { type: 'string' },
  only: { type: 'string' },
  out: { type: 'string', default: '.bench-out' },
  svg: { type: 'string' },
  replot: { type: 'string' },
  goals: { type: 'boolean', default: false },
  pin: { type: 'boolean', default: false },
  spread: { type: 'boolean', default: false },
  many: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
}

/** The options of a bench run, from the command line (`--rounds 2` and `--rounds=2` alike). */
export function parseBenchArgs(argv) {
  let values
  try {
    ;({ values } = parseArgv({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }))
  } catch (e) {
    throw new UsageError(e.message)
  }
  const o = {
    quick: values.quick,
    rounds: values.rounds === undefined ? null : positive(values.rounds, '--rounds'),
    ms: values.ms === undefined ? null : positive(values.ms, '--ms'),
    only: values.only ?? null,
    out: values.out,
    svg: values.svg ?? null,
    replot: values.replot ?? null,
    goals: values.goals,
    pin: values.pin,
    help: values.help,
  }
  o.rounds ??= o.quick ? 1 : 3
  o.ms ??= o.quick ? 150 : 1000
  return o
}

function positive(v, what) {
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0)
    throw new UsageError(`${what} must be a positive integer, got ${JSON.stringify(v)}`)
  return n
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function progress(text) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`)
  else process.stderr.write(`${text}\n`)
}

/** Benches of their own, reached through a flag: several channels, and many clients of one server. */
const OTHER_BENCHES = { '--spread': './spread.mjs', '--many': './clients.mjs' }

export async function main(argv = process.argv.slice(2)) {
  // The other benches take the rest of the command line.
  for (const [flag, file] of Object.entries(OTHER_BENCHES)) {
    if (!argv.includes(flag)) continue
    const other = await import(file)
    try {
      return await other.main(argv.filter((a) => a !== flag))
    } catch (e) {
      if (e.name === 'UsageError') throw Object.assign(new UsageError(e.message), { usage: other.USAGE })
      throw e
    }
  }
  const o = parseBenchArgs(argv)
  if (o.help) {
    console.log(USAGE)
    return
  }
  if (o.replot !== null) {
    // Table and chart again from an earlier run's JSON, without measuring.
    const report = JSON.parse(readFileSync(o.replot, 'utf8'))
    printTable(report, o)
    const svgPath = writeChart(report, o)
    if (svgPath) console.log(`\nwrote ${svgPath}`)
    return
  }
  const only = o.only?.split(',') ?? null
  const exact = (w) => SCENARIOS.some((s) => s.id === w)
  const scenarios = SCENARIOS.filter(
    (s) => only === null || only.some((w) => (exact(w) ? s.id === w : s.id.includes(w))),
  )
  if (scenarios.length === 0)
    throw new UsageError(`--only ${o.only} matches no scenario; ids: ${SCENARIOS.map((s) => s.id).join(', ')}`)
  const machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism?.() ?? os.cpus().length,
    node: process.version,
    os: `${os.type()} ${os.release()} ${process.arch}`,
  }
  if (o.pin) pinThisProcess(machine.cores)
  const steps = scenarios.reduce((n, s) => n + (s.transports ?? IPC_ALL).length * o.rounds, 0)
  let step = 0
  const rows = []
  const started = Date.now()
  for (const s of scenarios) {
    const ids = s.transports ?? IPC_ALL
    const values = Object.fromEntries(ids.map((id) => [id, []]))
    const ceilings = []
    const hogs = hogCount(s.hogs, machine.cores)
    const stopHogs = hogs > 0 ? await startBenchHogs(hogs) : null
    try {
      for (let round = 0; round < o.rounds; round++) {
        // Interleave: rotate the order every round so no transport always runs first.
        for (let k = 0; k < ids.length; k++) {
          const id = ids[(k + round) % ids.length]
          step++
          progress(`[${step}/${steps}] ${label(s)} · ${transports[id].name} · round ${round + 1}/${o.rounds}`)
          values[id].push(await runOne(id, s, o.ms))
        }
        if (s.kind === 'loops') ceilings.push(await inProcessCeiling(s, o.ms))
      }
    } finally {
      await stopHogs?.()
    }
    const row = { id: s.id, label: label(s), unit: values[ids[0]][0].unit, results: {} }
    if (hogs > 0) row.hogs = hogs
    for (const id of ids) {
      const v = values[id]
      row.results[id] = { median: median(v.map((r) => r.value)), runs: v.map((r) => r.value) }
      if (v[0].detail) {
        row.results[id].detail = Object.fromEntries(
          Object.keys(v[0].detail).map((k) => [k, median(v.map((r) => r.detail[k]))]),
        )
      }
    }
    const ours = row.results[ids[0]].median
    if (s.lowerIsBetter) {
      rows.push(row)
      continue
    }
    const baselines = ids.slice(1)
    const best = baselines.reduce((b, id) => (row.results[id].median > row.results[b].median ? id : b), baselines[0])
    row.best = best
    row.ratio = ours / row.results[best].median
    if (s.memcpy) {
      row.memcpyMBps = memcpy(s.size, Math.min(o.ms, 300))
      row.ofMemcpy = (ours * s.size) / 1e6 / row.memcpyMBps
    }
    if (ceilings.length > 0) {
      row.ceiling = median(ceilings)
      row.ofCeiling = ours / row.ceiling
    }
    if (s.goal) row.goal = `≥ ${s.goal}x`
    if (s.goal) row.met = row.ratio >= s.goal
    if (s.ceilingGoal) {
      row.goal += `, ≥ ${s.ceilingGoal * 100}% of in-process`
      row.met &&= row.ofCeiling >= s.ceilingGoal
    }
    if (s.p99Goal) {
      const p99 = (id) => row.results[id]?.detail?.p99
      row.goal += ', p99 ≤ socket'
      row.met &&= p99(ids[0]) <= p99('uds')
    }
    if (s.memcpyGoal) {
      row.goal = `≥ ${s.memcpyGoal * 100}% of memcpy`
      row.met = row.ofMemcpy >= s.memcpyGoal
    }
    rows.push(row)
  }
  // Full duplex: per direction at least as good as half duplex.
  for (const s of scenarios.filter((x) => x.goalVs)) {
    const row = rows.find((r) => r.id === s.id)
    const half = rows.find((r) => r.id === s.goalVs)
    if (!half) continue
    row.goal = `≥ half duplex`
    row.met = row.results.sharmipc.median >= half.results.sharmipc.median
  }
  progress(`done in ${((Date.now() - started) / 1000).toFixed(0)} s\n`)

  if (o.pin) machine.pinned = { bench: coresOf(process.pid), peer: [...peerCores].join(' and ') }
  const { help, ...options } = o
  options.seqWarmUpMs = Math.min(SEQ_WARM_UP_MS, o.ms)
  const report = { machine, date: new Date().toISOString(), options, rows }
  printTable(report, o)
  mkdirSync(o.out, { recursive: true })
  const jsonPath = path.join(o.out, 'bench.json')
  writeFileSync(jsonPath, JSON.stringify(report, null, 2) + '\n')
  const svgPath = writeChart(report, o)
  console.log(`\nwrote ${jsonPath}${svgPath ? ` and ${svgPath}` : ''}`)
}

/** Writes the chart; returns its path, or null when no row of the report can be charted. */
function writeChart(report, o) {
  const svg = chart(report, { goals: o.goals })
  const svgPath = o.svg ?? path.join(o.out, 'bench.svg')
  if (svg === null) {
    console.log('\nno chart: none of these scenarios compares throughput (the idle row is a CPU figure)')
    return null
  }
  mkdirSync(path.dirname(svgPath), { recursive: true })
  writeFileSync(svgPath, svg)
  return svgPath
}

function printTable(report, o) {
  const width = process.stdout.isTTY ? Math.min(120, process.stdout.columns || 120) : 120
  console.log(`\n${tableLines(report, { goals: o.goals, width }).join('\n')}`)
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((e) => {
    if (e instanceof UsageError) {
      console.error(`sharmipc bench: ${e.message}\n\n${e.usage ?? USAGE}`)
      process.exit(2)
    }
    console.error(`\nbench failed: ${e?.stack ?? e}`)
    process.exit(1)
  })
}
