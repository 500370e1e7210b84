#!/usr/bin/env node
// sharmipc command line: the channels on this machine (list, inspect, clean) and the
// side-by-side benchmarks (bench). Arguments are parsed with util.parseArgs; a bad one prints one
// line and the usage and exits with 2.
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const require = createRequire(import.meta.url)
const { version } = require('../package.json')

const USAGE = `usage: sharmipc <command> [options]

commands:
  list [--json]                 the channels on this machine: name, sides, pids, alive, generation, capacity, age
  inspect <name> [--json]       one channel's segment: header, sides, ring fill, indices and flags
  clean [name] [--json]         removes the segment of <name>, or of every channel, if no live process holds
                                a side (a process killed by a signal leaves its segment behind); refuses live
                                ones, and leaves segments of other sharmipc versions alone
  bench [bench options]         runs the side-by-side benchmarks (sharmipc bench --help for its options)

options:
  -h, --help                    prints this and exits
  -v, --version                 prints the version and exits`

/** Thrown for a bad command line: one line, then the usage, exit code 2. */
class UsageError extends Error {}

const COMMON = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
}

/** util.parseArgs, with its errors turned into usage errors. */
function parse(args, options, allowPositionals) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true })
  } catch (e) {
    throw new UsageError(e.message)
  }
}

async function usage() {
  let benchUsage = ''
  try {
    // The bench's own options and scenarios, as its parser knows them.
    benchUsage = `\n\n${(await import('../benches/run.mjs')).USAGE}`
  } catch {
    // the benches are not shipped here: the usage goes without them
  }
  return USAGE + benchUsage
}

/** The segment functions, from the compiled library. */
function segments() {
  return require('../dist/lib/segments.js')
}

function age(ms) {
  if (ms == null) return '?'
  const s = ms / 1000
  if (s < 60) return `${s.toFixed(0)} s`
  if (s < 3600) return `${(s / 60).toFixed(0)} min`
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`
  return `${(s / 86400).toFixed(1)} d`
}

function bytes(n) {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`
  return `${n} B`
}

function nameOf(info) {
  return info.name ?? info.osId
}

function sideWord(s) {
  if (s.pid === 0) return '-'
  const how = s.alive ? 'alive' : s.otherNamespace ? 'other PID namespace' : s.pidVisible ? 'dead (pid reused)' : 'dead'
  return `${s.pid} ${how}`
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

/** A server's lobby in the list: its server in the first pid column, its clients in the second. */
function lobbyRow(i) {
  const l = i.lobbySummary
  const server = !l || l.serverPid === 0 ? '-' : `${l.serverPid} ${l.serverAlive ? 'alive' : 'dead'}`
  const clients = l ? `${l.clients} client${l.clients === 1 ? '' : 's'}, ${l.clientsAlive} alive` : '-'
  return [nameOf(i), 'lobby', server, clients, i.live ? 'yes' : 'no', '-', "a server's lobby", age(i.ageMs)]
}

function list(args) {
  const { values } = parse(args, { ...COMMON, json: { type: 'boolean' } }, false)
  const all = segments().listSegments()
  if (values.json) return console.log(JSON.stringify(all, null, 2))
  if (all.length === 0) return console.log('no sharmipc channels on this machine')
  const rows = [['name', 'sides', 'side 0 pid', 'side 1 pid', 'alive', 'generations', 'capacity', 'age']]
  for (const i of all) {
    if (i.lobby) {
      rows.push(lobbyRow(i))
      continue
    }
    const held = i.sides.map((s, k) => (s.held ? String(k) : null)).filter((x) => x !== null)
    rows.push([
      nameOf(i),
      held.length ? held.join(',') : 'none',
      sideWord(i.sides[0]),
      sideWord(i.sides[1]),
      i.live ? 'yes' : 'no',
      i.sides.map((s) => s.generation).join('/'),
      i.magicOk
        ? bytes(i.capacity)
        : i.lobby
          ? "a server's lobby"
          : i.isSharmipc
            ? `other version (layout ${i.layoutVersion})`
            : 'not sharmipc',
      age(i.ageMs),
    ])
  }
  console.log(table(rows))
}

function inspect(args) {
  const { values, positionals } = parse(args, { ...COMMON, json: { type: 'boolean' } }, true)
  if (positionals.length !== 1) throw new UsageError('inspect takes one channel name')
  const [name] = positionals
  const i = segments().inspectSegment(name)
  if (i === null) {
    console.error(`sharmipc: no channel ${JSON.stringify(name)} on this machine`)
    return 1
  }
  if (values.json) return console.log(JSON.stringify(i, null, 2))
  if (i.lobby) {
    const l = i.lobbySummary
    console.log(
      [
        `server      ${nameOf(i)}`,
        `segment     ${i.path}, ${i.bytes} bytes, owner uid ${i.uid}, mode 0${i.mode.toString(8)}, age ${age(i.ageMs)}`,
        "format      a server's lobby (serve() and connect())",
        `served by   ${!l || l.serverPid === 0 ? 'no server' : `pid ${l.serverPid}, ${l.serverAlive ? 'alive' : 'dead'}`}`,
        `clients     ${l ? `${l.clients} places held, ${l.clientsAlive} by live processes` : 'not readable (being made, or truncated)'}`,
      ].join('\n'),
    )
    return
  }
  const lines = [
    `channel     ${nameOf(i)}`,
    `segment     ${i.path}, ${i.bytes} bytes, owner uid ${i.uid}, mode 0${i.mode.toString(8)}, age ${age(i.ageMs)}`,
    `format      ${i.magicOk ? 'sharmipc' : i.isSharmipc ? 'sharmipc of another version' : 'not a sharmipc segment'}, layout ${i.layoutVersion}, protocol ${i.protocolVersion}`,
    `state       ${i.initState}, attach word 0x${i.attach.toString(16)} (${i.flags.join(', ') || 'no side held'}), creator pid ${i.creatorPid}`,
    `capacity    ${bytes(i.capacity)} per direction`,
  ]
  i.sides.forEach((s, k) => {
    lines.push(
      `side ${k}      pid ${s.pid || '-'}, ${s.state}, generation ${s.generation}, ${s.held ? 'held' : 'not held'}, ` +
        (s.pid === 0
          ? 'no process'
          : s.alive
            ? 'alive'
            : s.otherNamespace
              ? 'not this process: it runs in another PID namespace'
              : s.pidVisible
                ? 'dead (its pid now names another process)'
                : 'dead, or in another PID namespace'),
    )
  })
  for (const r of i.rings) {
    const pct = i.capacity > 0 ? ((100 * r.fill) / i.capacity).toFixed(1) : '0'
    const flags = [r.readerAsleep ? 'reader asleep' : null, r.writerWaiting ? 'writer waiting' : null].filter(Boolean)
    lines.push(
      `ring ${r.fromSide}→${1 - r.fromSide}    fill ${r.fill} bytes (${pct} %), write ${r.write}, read ${r.read}, handed ${r.handed}` +
        (flags.length ? `, ${flags.join(', ')}` : ''),
    )
  }
  if (i.rings.length === 0)
    lines.push('rings       not readable (too short, or not a sharmipc segment of this version)')
  console.log(lines.join('\n'))
}

function clean(args) {
  const { values, positionals } = parse(args, { ...COMMON, json: { type: 'boolean' } }, true)
  if (positionals.length > 1) throw new UsageError('clean takes at most one channel name')
  const seg = segments()
  const names = positionals.length === 1 ? positionals : seg.listSegments().map((i) => i.osId)
  if (positionals.length === 1 && seg.inspectSegment(positionals[0]) === null) {
    console.error(`sharmipc: no channel ${JSON.stringify(positionals[0])} on this machine`)
    return 1
  }
  const results = names.map((n) => ({ name: n, ...seg.cleanSegment(n) }))
  if (values.json) console.log(JSON.stringify(results, null, 2))
  else if (results.length === 0) console.log('no sharmipc channels on this machine')
  for (const r of results) {
    if (values.json) break
    if (r.result === 'removed') console.log(`removed ${r.name}`)
    else if (r.result === 'live') console.log(`kept ${r.name}: held by live ${r.holders}`)
    else if (r.result === 'foreign') console.log(`kept ${r.name}: ${r.what}, not touched by this version`)
    else console.log(`kept ${r.name}: being created or removed right now`)
  }
  // Naming one that is live is a refusal.
  return positionals.length === 1 && results[0].result !== 'removed' ? 1 : 0
}

/** The bench parses its own command line (benches/run.mjs); its usage errors are ours. */
async function bench(args) {
  const run = await import('../benches/run.mjs')
  try {
    await run.main(args)
  } catch (e) {
    if (e instanceof run.UsageError) {
      console.error(`sharmipc: ${e.message}\n\n${e.usage ?? run.USAGE}`)
      return 2
    }
    throw e
  }
}

async function run(argv) {
  const [command, ...rest] = argv
  if (command === undefined) throw new UsageError('no command given')
  if (command.startsWith('-')) {
    const { values } = parse(argv, COMMON, false)
    if (values.version) return console.log(version)
    return console.log(await usage())
  }
  if (command !== 'bench' && (rest.includes('--help') || rest.includes('-h'))) return console.log(await usage())
  if (rest.includes('--version') || rest.includes('-v')) return console.log(version)
  switch (command) {
    case 'help':
      return console.log(await usage())
    case 'list':
      return list(rest)
    case 'inspect':
      return inspect(rest)
    case 'clean':
      return clean(rest)
    case 'bench':
      return bench(rest)
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  }
}

run(process.argv.slice(2)).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code
  },
  async (e) => {
    if (e instanceof UsageError) {
      console.error(`sharmipc: ${e.message}\n\n${await usage()}`)
      process.exitCode = 2
    } else {
      console.error(`sharmipc: ${e?.message ?? e}`)
      process.exitCode = 1
    }
  },
)
