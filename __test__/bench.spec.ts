// The bench's output: its options, the table, the latency percentiles, the chart, and what is
// written for a selection without throughput rows. Figures are not checked (machines are noisy).
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'

import test from 'ava'

import { only } from './helpers/platform'

const root = path.join(__dirname, '..')
const run = path.join(root, 'benches', 'run.mjs')
const sample = path.join(root, 'docs', 'performance.json')
const exec = promisify(execFile)

/** Loads one of the bench's modules (plain JavaScript, so typed loosely here). */
const load = (file: string): Promise<any> => import(pathToFileURL(path.join(root, 'benches', file)).href)

async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [run, ...args], { cwd: root, timeout: 120_000 })
    return { code: 0, stdout, stderr }
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string }
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

function tempDir(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'sharmipc-bench-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('the table fits 120 columns, and shows no goals unless --goals asks', async (t) => {
  const out = tempDir(t)
  const plain = await bench(['--replot', sample, '--out', out])
  t.is(plain.code, 0, plain.stderr)
  const long = plain.stdout.split('\n').filter((l) => l.length > 120)
  t.deepEqual(long, [], 'lines over 120 columns')
  t.regex(plain.stdout, /^\| scenario +\| sharmipc +\| Unix socket +\| child IPC +\| ratio +\|/m)
  t.notRegex(plain.stdout, /NOT met|goal/i)
  const goals = await bench(['--replot', sample, '--out', out, '--goals'])
  t.is(goals.code, 0, goals.stderr)
  t.regex(goals.stdout, /the project's goals:/)
  // A goal line, made of the sample's own figures.
  const { ratio } = await load('report.mjs')
  const rpc = JSON.parse(readFileSync(sample, 'utf8')).rows.find((r: { id: string }) => r.id === 'rpc-1')
  const line = `RPC 1 B, 256 in flight: ${rpc.goal}: ${rpc.met ? 'met' : 'NOT met'} (${ratio(rpc.ratio)})`
  t.true(goals.stdout.split('\n').includes(`  ${line}`), line)
  t.deepEqual(
    goals.stdout.split('\n').filter((l) => l.length > 120),
    [],
  )
})

test('a terminal narrower than the table gets one block per scenario', async (t) => {
  const { tableLines } = await load('report.mjs')
  const report = JSON.parse(readFileSync(sample, 'utf8'))
  const lines: string[] = tableLines(report, { width: 80 })
  t.false(
    lines.some((l) => l.startsWith('| scenario ') && l.includes('sharmipc')),
    'no wide table',
  )
  // The first scenario's block, made of the sample's own figures.
  const { fmt, ratio } = await load('report.mjs')
  const first = report.rows[0]
  const at = lines.indexOf('send-and-forget 1 B')
  t.true(at >= 0)
  t.is(lines[at + 1], `  sharmipc: ${fmt(first.results.sharmipc.median)} ${first.unit}`)
  t.true(lines.slice(at + 1, at + 6).includes(`  ratio: ${ratio(first.ratio)}`))
})

test('the chart: axis titles, a legend naming every transport, the table ratio on each bar, labels clear of lines and bars', async (t) => {
  const { chart } = await load('chart.mjs')
  const { ratio } = await load('report.mjs')
  const report = JSON.parse(readFileSync(sample, 'utf8'))
  const svg: string = chart(report)
  t.regex(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  t.true(svg.trimEnd().endsWith('</svg>'))
  t.regex(svg, /figure ÷ faster baseline \(×, log scale; higher is better\)/)
  t.regex(svg, /throughput relative to the faster of Unix socket and child_process IPC/)
  t.regex(svg, />scenario \(sharmipc's figure below it\)</)
  for (const name of ['sharmipc', 'sharmipc, latency mode', 'Unix socket', 'child_process IPC']) {
    t.true(svg.includes(`>${name}</text>`), `legend entry ${name}`)
  }
  // The same base as the table: sharmipc's bar is labelled with the row's ratio to the best baseline.
  for (const r of report.rows.filter((x: any) => x.ratio !== undefined)) {
    t.true(svg.includes(`>${ratio(r.ratio)}</text>`), `${r.id}: ${ratio(r.ratio)}`)
  }
  t.notRegex(svg, /goal/, 'no goal marks without goals: true')
  t.regex(chart(report, { goals: true }), /goal of the project/)
  t.regex(svg, /Not charted \(no ratio to draw\): idle channel/)

  // Geometry: value labels lie on white grounds drawn after every line, and overlap no bar and
  // no other label.
  type Box = { x: number; y: number; w: number; h: number }
  const boxes = (re: RegExp): Box[] => [...svg.matchAll(re)].map((m) => ({ x: +m[1], y: +m[2], w: +m[3], h: +m[4] }))
  const grounds = boxes(/<rect x="([\d.-]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)" fill="#fff"\/>/g)
  const bars = boxes(
    /<rect x="([\d.-]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)" fill="#(?!fff)[0-9a-f]{6}"><title>/g,
  )
  t.true(grounds.length >= bars.length, `${grounds.length} label grounds for ${bars.length} bars`)
  const overlap = (a: Box, b: Box) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
  for (const g of grounds) {
    t.false(
      bars.some((b) => overlap(g, b)),
      `label at ${g.x},${g.y} overlaps a bar`,
    )
    t.is(grounds.filter((o) => o !== g && overlap(g, o)).length, 0, `label at ${g.x},${g.y} overlaps a label`)
  }
  const firstGround = svg.search(/<rect x="[\d.-]+" y="[\d.-]+" width="[\d.]+" height="[\d.]+" fill="#fff"\/>/)
  t.true(firstGround > 0 && svg.lastIndexOf('<line') < firstGround, 'every line is drawn before the labels')
})

test('--only idle measures, writes the JSON and no chart', async (t) => {
  const out = tempDir(t)
  const r = await bench(['--quick', '--only', 'idle', '--out', out])
  t.is(r.code, 0, r.stderr)
  t.true(existsSync(path.join(out, 'bench.json')))
  t.false(existsSync(path.join(out, 'bench.svg')))
  t.regex(r.stdout, /no chart: none of these scenarios compares throughput/)
})

/** Pids of the processes whose command line is the bench's CPU hog. */
async function hogPids(): Promise<number[]> {
  const { HOG_PROGRAM } = await load('hogs.mjs')
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').includes(HOG_PROGRAM)
      } catch {
        return false // gone meanwhile
      }
    })
    .map(Number)
}

const linuxOnly = only(['linux'], 'it finds the hogs in /proc')
linuxOnly.serial(
  'busy rows run with a CPU hog per core (but one) that the bench starts and stops; async loops get their in-process ceiling',
  async (t) => {
    const out = tempDir(t)
    const before = await hogPids()
    const r = await bench(['--quick', '--only', 'seq-1-busy,seq-1-busy-all,loops-1', '--out', out])
    t.is(r.code, 0, r.stderr)
    const report = JSON.parse(readFileSync(path.join(out, 'bench.json'), 'utf8'))
    const row = (id: string) => report.rows.find((x: { id: string }) => x.id === id)
    const cores = availableParallelism()
    t.is(row('seq-1-busy').hogs, Math.max(1, cores - 1))
    t.is(row('seq-1-busy-all').hogs, cores)
    t.is(row('loops-1').hogs, undefined)
    t.true(row('loops-1').ceiling > 0)
    t.is(row('loops-1').ofCeiling, row('loops-1').results.sharmipc.median / row('loops-1').ceiling)
    t.regex(r.stdout, /busy: the bench runs a CPU hog per core but one/)
    const { fmt } = await load('report.mjs')
    const share = `${(row('loops-1').ofCeiling * 100).toFixed(0)}% of ${fmt(row('loops-1').ceiling)}`
    t.true(r.stdout.includes(share), share)
    t.regex(r.stdout, /async loops: % of the in-process ceiling/)
    t.deepEqual(await hogPids(), before, 'every hog the bench started is gone')
  },
)

// Serial, as the busy rows' test: both count the hogs on the machine.
only(['linux'], '--pin uses taskset').serial(
  '--pin runs this process on core 0 and every peer on core 1, says so, and stops its hogs',
  async (t) => {
    const out = tempDir(t)
    const before = await hogPids()
    const r = await bench(['--pin', '--quick', '--only', 'seq-1,seq-1-busy', '--out', out])
    t.is(r.code, 0, r.stderr)
    const report = JSON.parse(readFileSync(path.join(out, 'bench.json'), 'utf8'))
    t.deepEqual(report.machine.pinned, { bench: '0', peer: '1' })
    t.regex(r.stdout, /; this process on core 0, its peer on core 1\n/)
    t.is(report.options.pin, true)
    t.deepEqual(await hogPids(), before, 'every hog the bench started is gone')
    const plain = await bench(['--quick', '--only', 'seq-1', '--out', out])
    t.is(plain.code, 0, plain.stderr)
    t.is(JSON.parse(readFileSync(path.join(out, 'bench.json'), 'utf8')).machine.pinned, undefined)
    t.notRegex(plain.stdout, /its peer on core/)
  },
)

test('sequential RPC reports p50 ≤ p99 ≤ p99.9 for every transport, from a perf_hooks histogram', async (t) => {
  const out = tempDir(t)
  const r = await bench(['--quick', '--only', 'seq-1', '--out', out])
  t.is(r.code, 0, r.stderr)
  const report = JSON.parse(readFileSync(path.join(out, 'bench.json'), 'utf8'))
  const row = report.rows.find((x: any) => x.id === 'seq-1')
  t.deepEqual(Object.keys(row.results), ['sharmipc', 'uds', 'ipc'])
  for (const [id, x] of Object.entries<any>(row.results)) {
    const { p50, p99, p999 } = x.detail
    t.true(p50 > 0 && p50 <= p99 && p99 <= p999, `${id}: ${p50} ${p99} ${p999}`)
  }
  t.regex(r.stdout, /round-trip latency of sequential RPC, µs/)
  t.true(existsSync(path.join(out, 'bench.svg')))
  t.true(readFileSync(path.join(root, 'benches', 'loops.mjs'), 'utf8').includes('createHistogram()'))
})

test('options: --rounds=2 and --rounds 2 alike; a bad one prints a line and the usage, exits 2, no stack', async (t) => {
  const { parseBenchArgs } = await load('run.mjs')
  t.is(parseBenchArgs(['--rounds=2']).rounds, 2)
  t.is(parseBenchArgs(['--rounds', '2', '--ms=50']).ms, 50)
  t.false(parseBenchArgs([]).goals)
  t.true(parseBenchArgs(['--goals']).goals)
  const bad = await bench(['--bogus'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /^sharmipc bench: Unknown option '--bogus'\n\nusage: sharmipc bench/)
  t.notRegex(bad.stderr, /\n\s+at /, 'no stack trace')
  const help = await bench(['--help'])
  t.is(help.code, 0)
  t.regex(help.stdout, /--goals/)
  t.regex(help.stdout, /scenarios: send-1, /)
})

test('--many reaches the many-clients bench, which measures both transports for each count of clients', async (t) => {
  const help = await bench(['--many', '--help'])
  t.is(help.code, 0, help.stderr)
  t.regex(help.stdout, /^usage: sharmipc bench --many/)
  const bad = await bench(['--many', '--clients', '0'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /^sharmipc bench: --clients must be a positive integer, got "0"\n\nusage: sharmipc bench --many/)
  t.notRegex(bad.stderr, /\n\s+at /)
  const ran = await bench(['--many', '--clients', '1,2', '--rounds', '1', '--ms', '200'])
  t.is(ran.code, 0, ran.stderr)
  const rows = ran.stdout.split('\n').filter((l) => /^\| \d+ \|/.test(l))
  t.deepEqual(
    rows.map((r) => r.split('|')[1].trim()),
    ['1', '2'],
  )
  for (const r of rows) t.regex(r, /^\| \d+ \| [\d,]+ \| [\d,]+ \| [\d.]+x \|/)
})

test('--spread reaches the several-channels bench', async (t) => {
  const help = await bench(['--spread', '--help'])
  t.is(help.code, 0, help.stderr)
  t.regex(help.stdout, /^usage: sharmipc bench --spread/)
  const bad = await bench(['--spread', '--bogus'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /^sharmipc bench: Unknown option '--bogus'\n\nusage: sharmipc bench --spread/)
  t.is((await bench(['--spread', '--rounds=x'])).code, 2, '--spread --rounds=x')
  t.notRegex(bad.stderr, /\n\s+at /)
})
