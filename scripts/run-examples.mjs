// Runs every example under examples/ as a user would, and fails when one fails.
//
//   node scripts/run-examples.mjs [name...]   (npm run examples; names: usage, streams, ...)
//
// Each example starts its second process itself, except the Process1/Process2 pair, which is
// started together here (on a channel name of its own). TypeScript examples (.mts) run through
// tsx. Each must exit with 0 within its time limit, and leave no segment of its channels in
// /dev/shm. Prints one line per example and a summary; exits non-zero when any failed.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dir = path.join(root, 'examples')
const LIMIT_MS = 240_000

/** Started with process1.mjs, not on its own. */
const PARTNERS = { 'process1.mjs': 'process2.mjs' }
const partnered = new Set(Object.values(PARTNERS))

function run(file, args) {
  const ts = file.endsWith('.mts') || file.endsWith('.ts')
  const argv = [...(ts ? ['--import', 'tsx'] : []), path.join(dir, file), ...args]
  const child = spawn(process.execPath, argv, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), LIMIT_MS)
  return new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, out })
    }),
  )
}

const segments = () => (existsSync('/dev/shm') ? readdirSync('/dev/shm').filter((f) => f.startsWith('sharm.')) : [])

/** The channel names an example opens (literal names and prefixes), and the demos' own. */
function channelNames(files) {
  const names = ['demo', 'example']
  for (const f of files) {
    const text = readFileSync(path.join(dir, f), 'utf8')
    for (const m of text.matchAll(/(?:open|SharmIpc|openSpread|serve|connect)\(\s*'([^']+)'/g)) names.push(m[1])
  }
  return names
}

const only = process.argv.slice(2)
const files = readdirSync(dir)
  .filter((f) => /\.(mjs|cjs|mts)$/.test(f) && !partnered.has(f))
  .filter((f) => only.length === 0 || only.some((o) => f.startsWith(o)))
  .sort()
if (files.length === 0) {
  console.error(`no example matches ${only.join(' ')}`)
  process.exit(2)
}
let failed = 0
for (const file of files) {
  const before = new Set(segments())
  const started = Date.now()
  let results
  if (PARTNERS[file]) {
    const name = `example-${process.pid}`
    results = await Promise.all([run(file, [name]), run(PARTNERS[file], [name])])
  } else results = [await run(file, [])]
  const ms = Date.now() - started
  const bad = results.filter((r) => r.code !== 0)
  const names = [file, PARTNERS[file]].filter(Boolean).join(' + ')
  // Segments this example left: new ones of its channels (other programs may run meanwhile).
  const mine = channelNames([file, PARTNERS[file]].filter(Boolean))
  const left = segments().filter(
    // A server's lobby is `sharm.<name>`, its clients' channels `sharm.<name>.<place>-<ticket>`.
    (f) =>
      !before.has(f) &&
      mine.some((n) => f === `sharm.${n}` || f.startsWith(`sharm.${n}-`) || f.startsWith(`sharm.${n}.`)),
  )
  if (bad.length > 0 || left.length > 0) {
    failed++
    console.log(`✘ ${names} (${ms} ms)`)
    for (const r of results) console.log(`  exit ${r.code ?? r.signal}\n${r.out.replace(/^/gm, '    ')}`)
    if (left.length > 0) console.log(`  left in /dev/shm: ${left.join(', ')}`)
  } else {
    console.log(`✔ ${names} (${ms} ms)`)
  }
}
console.log(`examples: ${files.length - failed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
