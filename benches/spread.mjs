// Several channels: does spreading load over them pay, and what does each channel cost?
//
//   node benches/spread.mjs [--quick] [--rounds N] [--ms N] [--only ID[,ID...]] [--layouts L[,L...]]
//                           [--options JSON]   (extra options of every open(), e.g. '{"spinMicros":0}')
//   node benches/spread.mjs --cost [--channels N] [--capacity BYTES[,BYTES...]]
//
// Spreading (the default): the same load between two sides laid out in different ways, side by
// side in one run, each figure the median of the rounds (layouts take turns round by round):
//   channels:K    one pair of processes, K channels between them; each side spreads its load over
//                 the K channels round-robin (256 requests in flight in total)
//   processes:K   K pairs of processes, one channel per pair (256 in flight in total)
//   workers:K     one pair of processes, each running K worker_threads; worker i of one process
//                 and worker i of the other share channel i (256 in flight in total)
// Every side runs in a process (or worker) of its own; this process only starts them and adds up.
// A message counts when its receiver has it (each sending side ends with an empty marker on each
// of its channels); a rate is everything received over the time from the first send to the last
// marker.
//
// Cost (--cost): one process opens N channels (default 100) to one other process, for each
// capacity (default 1 MiB and 64 KiB), and reports its threads, its RSS (and the shared-memory
// part of it) and what /dev/shm holds: opened, connected, and after traffic that went through
// each ring twice. Linux only.
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs as parseArgv } from 'node:util'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'

const require = createRequire(import.meta.url)
const self = fileURLToPath(import.meta.url)
const now = () => Number(process.hrtime.bigint()) // CLOCK_MONOTONIC ns, comparable across processes
const END = Buffer.alloc(0)
const KiB = 1024
const MiB = 1024 * KiB

export const SCENARIOS = [
  { id: 'rpc-1', kind: 'rpc', size: 1, inflight: 256, label: 'RPC 1 B, 256 in flight' },
  { id: 'send-1', kind: 'send', size: 1, label: 'send-and-forget 1 B' },
  { id: 'send-10000', kind: 'send', size: 10_000, label: 'send-and-forget 10,000 B' },
]
const DEFAULT_LAYOUTS = 'channels:1,channels:2,channels:4,processes:2,workers:2'

// ---------------------------------------------------------------------------------------------
// An endpoint: one side of one or more channels, in a process or a worker thread, driven by
// control messages { op } from the bench process.
// ---------------------------------------------------------------------------------------------

async function endpoint({ names, capacity, options }, ctl) {
  const { open } = require('sharmipc')
  const before = probe()
  const chs = names.map((name) => open(name, { ...options, capacity, onRequest: (d) => d }))
  const opened = probe()
  let recv = null
  for (const ch of chs) {
    ch.on('message', (d) => {
      if (recv === null) return
      if (d.length > 0) recv.count++
      else if (++recv.ends === chs.length) recv.done({ count: recv.count, atNs: now() })
    })
  }
  ctl.send({ op: 'opened', before, opened })
  await Promise.all(chs.map((ch) => ch.waitForPeer(60_000)))
  ctl.send({ op: 'ready', probe: probe() })
  ctl.on(async (m) => {
    try {
      switch (m.op) {
        case 'recv':
          recv = { count: 0, ends: 0 }
          recv.promise = new Promise((resolve) => (recv.done = resolve))
          ctl.send({ op: 'receiving' })
          ctl.send({ op: 'received', ...(await recv.promise) })
          break
        case 'pump':
          ctl.send({ op: 'pumped', ...(await pump(chs, Buffer.alloc(m.size, 7), m.ms)) })
          break
        case 'rpc':
          ctl.send({ op: 'rpcDone', ...(await rpcLoop(chs, Buffer.alloc(m.size, 7), m.inflight, m.ms)) })
          break
        case 'idle': {
          // CPU time of this process over m.ms with every channel connected and nothing sent.
          const c0 = process.cpuUsage()
          const t0 = now()
          await new Promise((r) => setTimeout(r, m.ms))
          const c = process.cpuUsage(c0)
          ctl.send({ op: 'idleCpu', percent: ((c.user + c.system) * 1e5) / (now() - t0) })
          break
        }
        case 'wrap':
          await wrapRings(chs)
          ctl.send({ op: 'wrapped', probe: probe() })
          break
        case 'close':
          await Promise.all(chs.map((ch) => ch.close()))
          ctl.send({ op: 'closed', probe: probe() }, ctl.exit)
          break
      }
    } catch (e) {
      ctl.send({ op: 'failed', error: String(e?.stack ?? e) })
    }
  })
}

/** Sends `payload` for `ms` ms, round-robin over the channels, then an empty marker on each. */
async function pump(chs, payload, ms) {
  const start = now()
  const stop = start + ms * 1e6
  let sent = 0
  let next = 0
  for (;;) {
    for (let i = 0; i < 1024; i++) {
      const ch = chs[next++ % chs.length]
      if (ch.send(payload)) sent++
      else await once(ch, 'drain') // and the message goes to the next channel
    }
    if (now() >= stop) break
    await new Promise((r) => setImmediate(r))
  }
  for (const ch of chs) while (!ch.send(END)) await once(ch, 'drain')
  return { sent, startNs: start }
}

/** Keeps `inflight` requests going for `ms` ms, each on the next channel round-robin. */
function rpcLoop(chs, payload, inflight, ms) {
  return new Promise((resolve, reject) => {
    const start = now()
    const stop = start + ms * 1e6
    let calls = 0
    let out = 0
    let next = 0
    let stopping = false
    const one = () => {
      out++
      chs[next++ % chs.length].request(payload, { timeoutMs: 60_000 }).then(onAnswer, reject)
    }
    const onAnswer = () => {
      out--
      calls++
      if (!stopping && (calls & 255) === 0 && now() >= stop) stopping = true
      if (!stopping) one()
      else if (out === 0) resolve({ calls, startNs: start, endNs: now() })
    }
    for (let i = 0; i < inflight; i++) one()
  })
}

/** Echo requests on every channel until twice its capacity went through each ring. */
async function wrapRings(chs) {
  await Promise.all(
    chs.map(async (ch) => {
      const piece = Buffer.alloc(Math.min(ch.capacity / 4, 16 * KiB), 1)
      for (let n = 0; n < (2 * ch.capacity) / piece.length + 1; n++) await ch.request(piece)
    }),
  )
}

/** Threads and memory of this process (Linux). */
function probe() {
  try {
    const status = readFileSync('/proc/self/status', 'utf8')
    const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * KiB
    return {
      threads: readdirSync('/proc/self/task').length,
      rss: kb('VmRSS'),
      anon: kb('RssAnon'),
      shmem: kb('RssShmem'),
    }
  } catch {
    return { threads: NaN, rss: NaN, anon: NaN, shmem: NaN }
  }
}

/** A process hosting several endpoints, each in a worker thread; relays their control messages. */
function host({ groups, capacity, options }) {
  const workers = groups.map((names, w) => {
    const worker = new Worker(self, { workerData: { names, capacity, options } })
    worker.on('message', (m) => process.send({ w, m }))
    worker.on('error', (e) => process.send({ w, m: { op: 'failed', error: String(e?.stack ?? e) } }))
    return worker
  })
  let left = workers.length
  // Messages to the bench process go out in order: once this one is out, all are.
  const allOut = () => process.send({ w: -1, m: {} }, () => process.exit(0))
  for (const worker of workers) worker.on('exit', () => --left === 0 && allOut())
  process.on('message', ({ w, m }) => workers[w].postMessage(m))
}

// ---------------------------------------------------------------------------------------------
// The bench process: starts endpoints, drives them, adds up
// ---------------------------------------------------------------------------------------------

/** Control of one endpoint: `send(m)`, and `next(op)` resolves with its next reply `op`. */
class Link {
  constructor(post) {
    this.post = post
    this.waiters = new Map()
    this.early = new Map()
  }
  deliver(m) {
    if (m.op === 'failed') {
      for (const w of this.waiters.values()) w.reject(new Error(`endpoint failed: ${m.error}`))
      this.waiters.clear()
      this.failure = m.error
      return
    }
    const w = this.waiters.get(m.op)
    if (w) {
      this.waiters.delete(m.op)
      w.resolve(m)
    } else this.early.set(m.op, m)
  }
  next(op) {
    if (this.failure) return Promise.reject(new Error(`endpoint failed: ${this.failure}`))
    const m = this.early.get(op)
    if (m) {
      this.early.delete(op)
      return Promise.resolve(m)
    }
    return new Promise((resolve, reject) => this.waiters.set(op, { resolve, reject }))
  }
  send(m) {
    this.post(m)
  }
}

function forkEndpoint(setup) {
  const child = fork(self, ['--endpoint', JSON.stringify(setup)], { stdio: 'inherit' })
  const link = new Link((m) => child.send(m))
  child.on('message', (m) => link.deliver(m))
  link.exited = once(child, 'exit')
  return link
}

function forkHost(groups, capacity, options) {
  const child = fork(self, ['--host', JSON.stringify({ groups, capacity, options })], { stdio: 'inherit' })
  const links = groups.map((_, w) => new Link((m) => child.send({ w, m })))
  child.on('message', ({ w, m }) => links[w]?.deliver(m))
  const exited = once(child, 'exit')
  for (const l of links) l.exited = exited
  return links
}

let runNo = 0
/** Extra options of every open() (--options JSON), e.g. {"spinMicros":0}. */
let openOptions = {}

/** Starts both sides of a layout; resolves with the links of side A and side B once all connected. */
async function start(layout, k, capacity = MiB, options = openOptions) {
  const prefix = `spread-${process.pid}-${++runNo}`
  const names = Array.from({ length: k }, (_, i) => `${prefix}-${i}`)
  let as, bs, opened
  if (layout === 'channels') {
    as = [forkEndpoint({ names, capacity, options })]
    opened = await as[0].next('opened') // side A creates the channels
    bs = [forkEndpoint({ names, capacity, options })]
  } else if (layout === 'processes') {
    as = names.map((name) => forkEndpoint({ names: [name], capacity, options }))
    await Promise.all(as.map((l) => l.next('opened')))
    bs = names.map((name) => forkEndpoint({ names: [name], capacity, options }))
  } else if (layout === 'workers') {
    as = forkHost(
      names.map((n) => [n]),
      capacity,
      options,
    )
    await Promise.all(as.map((l) => l.next('opened')))
    bs = forkHost(
      names.map((n) => [n]),
      capacity,
      options,
    )
  } else throw new Error(`unknown layout ${layout}; expected channels, processes or workers`)
  const ready = await Promise.all([...as, ...bs].map((l) => l.next('ready')))
  return { as, bs, names, ready, opened }
}

async function stop({ as, bs, names }) {
  const all = [...as, ...bs]
  const closed = await Promise.all(
    all.map((l) => {
      const c = l.next('closed')
      l.send({ op: 'close' })
      return c
    }),
  )
  await Promise.all(all.map((l) => l.exited))
  // Both sides closed: the last one out removed each segment (Linux keeps them in /dev/shm).
  if (process.platform === 'linux') {
    const left = readdirSync('/dev/shm').filter((f) => names.some((n) => f === `sharm.${n}`))
    if (left.length > 0) console.warn(`\nsegments left after closing both sides: ${left.join(', ')}`)
  }
  return closed
}

async function measure(s, layout, k, ms) {
  const sides = await start(layout, k)
  const { as, bs } = sides
  try {
    if (s.kind === 'rpc') {
      const done = as.map((l) => l.next('rpcDone'))
      for (const l of as) l.send({ op: 'rpc', size: s.size, inflight: s.inflight / as.length, ms })
      const r = await Promise.all(done)
      const calls = r.reduce((n, x) => n + x.calls, 0)
      return (calls * 1e9) / (Math.max(...r.map((x) => x.endNs)) - Math.min(...r.map((x) => x.startNs)))
    }
    const receiving = bs.map((l) => l.next('receiving'))
    const received = bs.map((l) => l.next('received'))
    for (const l of bs) l.send({ op: 'recv' })
    await Promise.all(receiving)
    const pumped = as.map((l) => l.next('pumped'))
    for (const l of as) l.send({ op: 'pump', size: s.size, ms })
    const [p, r] = await Promise.all([Promise.all(pumped), Promise.all(received)])
    const sent = p.reduce((n, x) => n + x.sent, 0)
    const count = r.reduce((n, x) => n + x.count, 0)
    if (sent !== count) throw new Error(`${layout}:${k}: sent ${sent}, received ${count}`)
    return (count * 1e9) / (Math.max(...r.map((x) => x.atNs)) - Math.min(...p.map((x) => x.startNs)))
  } finally {
    await stop(sides)
  }
}

function layoutLabel(layout, k) {
  if (layout === 'channels') return k === 1 ? '1 channel' : `${k} channels`
  return `${k} ${layout === 'processes' ? 'process' : 'worker'} pairs`
}

const fmt = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)} M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)} k` : `${v.toFixed(0)}`)
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function machine() {
  return `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism?.() ?? os.cpus().length} cores, Node ${process.version}, ${os.type()} ${os.release()}`
}

async function spreadMain(o) {
  const layouts = o.layouts.split(',').map((l) => {
    const [layout, k] = l.split(':')
    return { layout, k: Number(k ?? 1), label: layoutLabel(layout, Number(k ?? 1)) }
  })
  const scenarios = o.only
    ? SCENARIOS.filter((s) => o.only.split(',').some((x) => s.id === x || s.id.includes(x)))
    : SCENARIOS
  const extra = Object.keys(openOptions).length > 0 ? `, open() options ${JSON.stringify(openOptions)}` : ''
  console.log(`${machine()}; ${o.rounds} round(s) of ${o.ms} ms, 1 MiB rings${extra}`)
  const rows = []
  for (const s of scenarios) {
    const values = layouts.map(() => [])
    for (let round = 0; round < o.rounds; round++) {
      for (const [i, l] of layouts.entries()) {
        values[i].push(await measure(s, l.layout, l.k, o.ms))
        process.stdout.write('.')
      }
    }
    rows.push({ s, values })
  }
  console.log('\n')
  const head = ['scenario', ...layouts.map((l) => l.label)]
  const lines = rows.map(({ s, values }) => {
    const base = median(values[0])
    return [
      `${s.label} (${s.kind === 'rpc' ? 'calls' : 'msg'}/s)`,
      ...values.map((v, i) => {
        const m = median(v)
        const range = v.length > 1 ? ` [${fmt(Math.min(...v))}–${fmt(Math.max(...v))}]` : ''
        return `${fmt(m)}${range}${i > 0 ? ` **${(m / base).toFixed(2)}x**` : ''}`
      }),
    ]
  })
  printTable(head, lines)
  console.log(`\nmedian [min–max] of the rounds; NNx: median / the first column's median`)
  return rows
}

function printTable(head, lines) {
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const row = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  console.log(row(head))
  console.log(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`)
  for (const l of lines) console.log(row(l))
}

async function costMain(o) {
  const n = o.channels
  const mb = (b) => `${(b / 1e6).toFixed(1)} MB`
  const kb = (b) => `${(b / 1e3).toFixed(0)} kB`
  console.log(`${machine()}; ${n} channels per process`)
  const head = [
    'capacity',
    'segment',
    'threads before → open',
    'RSS before → connected → after traffic',
    'of which shared memory',
    '/dev/shm used: connected → after traffic',
    'RSS per channel: connected; after traffic',
    'idle CPU, % of a core',
    'after close',
  ]
  const lines = []
  for (const capacity of o.capacity) {
    const sides = await start('channels', n, capacity)
    const opened = sides.opened
    const shmUsed = () =>
      sides.names.reduce((sum, name) => {
        try {
          return sum + statSync(`/dev/shm/sharm.${name}`).blocks * 512
        } catch {
          return sum
        }
      }, 0)
    const segment = statSync(`/dev/shm/sharm.${sides.names[0]}`).size
    const connected = sides.ready[0].probe
    const shm0 = shmUsed()
    const idle = sides.as[0].next('idleCpu')
    sides.as[0].send({ op: 'idle', ms: 2000 })
    const idleCpu = (await idle).percent
    const wrapped = sides.as.map((l) => l.next('wrapped'))
    for (const l of sides.as) l.send({ op: 'wrap' })
    const after = (await Promise.all(wrapped))[0].probe
    const shm1 = shmUsed()
    const [closed] = await stop(sides)
    const left = readdirSync('/dev/shm').filter((f) => sides.names.some((x) => f === `sharm.${x}`)).length
    const b = opened.before
    lines.push([
      capacity >= MiB ? `${capacity / MiB} MiB` : `${capacity / KiB} KiB`,
      `${segment.toLocaleString('en-US')} B`,
      `${b.threads} → ${opened.opened.threads}`,
      `${mb(b.rss)} → ${mb(connected.rss)} → ${mb(after.rss)}`,
      `${mb(b.shmem)} → ${mb(connected.shmem)} → ${mb(after.shmem)}`,
      `${mb(shm0)} → ${mb(shm1)}`,
      `${kb((connected.rss - b.rss) / n)}; ${kb((after.rss - b.rss) / n)} = ${kb((after.shmem - b.shmem) / n)} shared + ${kb((after.anon - b.anon) / n)} private`,
      `${idleCpu.toFixed(1)}%`,
      `${closed.probe.threads} threads, ${left} segments`,
    ])
  }
  printTable(head, lines)
  console.log(
    '\nRSS of the side that created the channels (its peer is alike); shared memory counts in RSS once touched',
  )
}

export const USAGE = `usage: sharmipc bench --spread [--quick] [--rounds N] [--ms N] [--only ID[,ID...]] [--layouts L[,L...]]
                              [--options JSON]
       sharmipc bench --spread --cost [--channels N] [--capacity BYTES[,BYTES...]]

  Spreading load over several channels: the same load laid out as K channels between two processes
  (channels:K), K pairs of processes (processes:K) or K pairs of worker threads (workers:K), side by
  side; default layouts ${DEFAULT_LAYOUTS}.
  --cost: what each channel costs (threads, memory, /dev/shm) with N channels (default 100).
  scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}`

/** A bad command line (shown with the usage, exit code 2). */
class UsageError extends Error {
  name = 'UsageError'
}

const OPTIONS = {
  quick: { type: 'boolean', default: false },
  rounds: { type: 'string' },
  ms: { type: 'string' },
  only: { type: 'string' },
  layouts: { type: 'string', default: DEFAULT_LAYOUTS },
  options: { type: 'string' },
  cost: { type: 'boolean', default: false },
  channels: { type: 'string' },
  capacity: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
}

/** The options, from the command line (`--rounds 2` and `--rounds=2` alike). */
function parseArgs(argv) {
  let values
  try {
    ;({ values } = parseArgv({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }))
  } catch (e) {
    throw new UsageError(e.message)
  }
  const positive = (v, what) => {
    const x = Number(v)
    if (!Number.isInteger(x) || x <= 0) throw new UsageError(`--${what} needs a positive integer, got ${v}`)
    return x
  }
  let options
  try {
    options = values.options === undefined ? undefined : JSON.parse(values.options)
  } catch (e) {
    throw new UsageError(`--options needs JSON: ${e.message}`)
  }
  return {
    quick: values.quick,
    rounds: values.rounds === undefined ? (values.quick ? 1 : 3) : positive(values.rounds, 'rounds'),
    ms: values.ms === undefined ? (values.quick ? 300 : 1000) : positive(values.ms, 'ms'),
    only: values.only ?? null,
    layouts: values.layouts,
    cost: values.cost,
    options,
    channels: values.channels === undefined ? 100 : positive(values.channels, 'channels'),
    capacity:
      values.capacity === undefined ? [MiB, 64 * KiB] : values.capacity.split(',').map((c) => positive(c, 'capacity')),
    help: values.help,
  }
}

export async function main(argv) {
  const o = parseArgs(argv)
  if (o.help) {
    console.log(USAGE)
    return
  }
  openOptions = o.options ?? {}
  return o.cost ? costMain(o) : spreadMain(o)
}

if (!isMainThread) {
  const ctl = {
    send: (m, then) => {
      parentPort.postMessage(m)
      then?.()
    },
    on: (fn) => parentPort.on('message', fn),
    exit: () => parentPort.close(),
  }
  endpoint(workerData, ctl).catch((e) => ctl.send({ op: 'failed', error: String(e?.stack ?? e) }))
} else if (process.argv[2] === '--endpoint') {
  const ctl = {
    send: (m, then) => process.send(m, then),
    on: (fn) => process.on('message', fn),
    exit: () => process.exit(0),
  }
  process.on('disconnect', () => process.exit(0))
  endpoint(JSON.parse(process.argv[3]), ctl).catch((e) => ctl.send({ op: 'failed', error: String(e?.stack ?? e) }))
} else if (process.argv[2] === '--host') {
  host(JSON.parse(process.argv[3]))
  process.on('disconnect', () => process.exit(0))
} else if (process.argv[1] === self) {
  main(process.argv.slice(2)).catch((e) => {
    if (e.name === 'UsageError') {
      console.error(`spread: ${e.message}\n\n${USAGE}`)
      process.exit(2)
    }
    console.error(`\nspread bench failed: ${e?.stack ?? e}`)
    process.exit(1)
  })
}
