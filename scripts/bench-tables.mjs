// The README's benchmark tables and chart, made from bench runs' JSON, never typed by hand:
//
//   node scripts/bench-tables.mjs           rewrites every marked region of README.md from the JSON
//                                           it names, and docs/performance.svg from
//                                           docs/performance.json; writes each JSON in the
//                                           project's format (prettier's)
//   node scripts/bench-tables.mjs --check   exits 1 when README.md or the chart differ
//
// A region: <!-- bench-tables: docs/performance.json [quiet|busy] --> ... <!-- /bench-tables -->,
// with the rows of that run (quiet: those without CPU hogs, busy: those with; neither word: all).
// The README has one region of each, both from one run. To publish a new run:
// npm run bench -- --out .bench-out, copy .bench-out/bench.json over the JSON, run this script,
// and update the prose around the tables.
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import prettier from 'prettier'

import { chart } from '../benches/chart.mjs'
import { isBusy, markdownTables } from '../benches/report.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const check = process.argv.includes('--check')
const readmePath = path.join(root, 'README.md')
const svgPath = path.join(root, 'docs', 'performance.svg')
const CHARTED = 'docs/performance.json'
const CLOSE = '<!-- /bench-tables -->'

const readme = readFileSync(readmePath, 'utf8')
const options = { ...(await prettier.resolveConfig(readmePath)), parser: 'markdown' }
const REGION = /<!-- bench-tables: (\S+)(?: (quiet|busy))? -->/g
const regions = [...readme.matchAll(REGION)].map((m) => ({ open: m[0], json: m[1], rows: m[2] }))
const keeps = { quiet: (r) => !isBusy(r), busy: isBusy, all: () => true }
if (!regions.some((r) => r.json === CHARTED)) {
  console.error(`README.md has no region <!-- bench-tables: ${CHARTED} --> ... ${CLOSE}`)
  process.exit(1)
}
let next = readme
for (const { open, json, rows } of regions) {
  const report = JSON.parse(readFileSync(path.join(root, json), 'utf8'))
  report.rows = report.rows.filter(keeps[rows ?? 'all'])
  const start = next.indexOf(open)
  const end = next.indexOf(CLOSE, start)
  if (end < 0) {
    console.error(`README.md: ${open} has no ${CLOSE} after it`)
    process.exit(1)
  }
  const tables = (await prettier.format(markdownTables(report).join('\n'), options)).trimEnd()
  next = `${next.slice(0, start)}${open}\n\n${tables}\n\n${next.slice(end)}`
}
const sources = [...new Set(regions.map((r) => r.json))].join(' and ')
const svg = chart(JSON.parse(readFileSync(path.join(root, CHARTED), 'utf8')))

if (check) {
  const stale = []
  if (next !== readme) stale.push('README.md')
  if (svg !== readFileSync(svgPath, 'utf8')) stale.push('docs/performance.svg')
  if (stale.length > 0) {
    console.error(`${stale.join(' and ')} not made from ${sources}: run node scripts/bench-tables.mjs`)
    process.exit(1)
  }
  console.log(`README.md tables and docs/performance.svg match ${sources}`)
} else {
  for (const json of new Set(regions.map((r) => r.json))) {
    const file = path.join(root, json)
    const text = readFileSync(file, 'utf8')
    writeFileSync(file, await prettier.format(text, { ...(await prettier.resolveConfig(file)), parser: 'json' }))
  }
  writeFileSync(readmePath, next)
  writeFileSync(svgPath, svg)
  console.log(`wrote the tables of README.md from ${sources}, and docs/performance.svg`)
}
