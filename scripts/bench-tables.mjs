// The README's benchmark tables and chart, made from a bench run's JSON (docs/performance.json),
// never typed by hand:
//
//   node scripts/bench-tables.mjs [FILE.json]           rewrites the marked region of README.md and
//                                                       docs/performance.svg from FILE (default
//                                                       docs/performance.json)
//   node scripts/bench-tables.mjs --check [FILE.json]   exits 1 when README.md or the chart differ
//
// To publish a new run: npm run bench -- --out .bench-out, copy .bench-out/bench.json to
// docs/performance.json, run this script, and update the prose around the tables.
// The region: <!-- bench-tables: docs/performance.json --> ... <!-- /bench-tables -->
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import prettier from 'prettier'

import { chart } from '../benches/chart.mjs'
import { markdownTables } from '../benches/report.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const check = args.includes('--check')
const jsonRel = args.find((a) => !a.startsWith('--')) ?? 'docs/performance.json'
const readmePath = path.join(root, 'README.md')
const svgPath = path.join(root, 'docs', 'performance.svg')

const report = JSON.parse(readFileSync(path.join(root, jsonRel), 'utf8'))
const open = `<!-- bench-tables: ${jsonRel} -->`
const close = '<!-- /bench-tables -->'
const readme = readFileSync(readmePath, 'utf8')
const start = readme.indexOf(open)
const end = readme.indexOf(close)
if (start < 0 || end < start) {
  console.error(`README.md has no region ${open} ... ${close}`)
  process.exit(1)
}
const options = { ...(await prettier.resolveConfig(readmePath)), parser: 'markdown' }
const tables = (await prettier.format(markdownTables(report).join('\n'), options)).trimEnd()
const next = `${readme.slice(0, start)}${open}\n\n${tables}\n\n${readme.slice(end)}`
const svg = chart(report)

if (check) {
  const stale = []
  if (next !== readme) stale.push('README.md')
  if (svg !== readFileSync(svgPath, 'utf8')) stale.push('docs/performance.svg')
  if (stale.length > 0) {
    console.error(`${stale.join(' and ')} not made from ${jsonRel}: run node scripts/bench-tables.mjs`)
    process.exit(1)
  }
  console.log(`README.md tables and docs/performance.svg match ${jsonRel}`)
} else {
  writeFileSync(readmePath, next)
  writeFileSync(svgPath, svg)
  console.log(`wrote the tables of README.md and docs/performance.svg from ${jsonRel}`)
}
