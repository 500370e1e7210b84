// Builds the API reference (TypeDoc, `npm run docs` → docs/api/) and checks that it documents
// every name the package exports at run time, from `sharmipc` and from `sharmipc/compat`.
// Needs the build (dist/). Exits non-zero naming what is missing.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const out = path.join(root, 'docs', 'api')

rmSync(out, { recursive: true, force: true })
const typedoc = path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc')
const r = spawnSync(process.execPath, [typedoc], { cwd: root, encoding: 'utf8' })
process.stdout.write(r.stdout)
process.stderr.write(r.stderr)
if (r.status !== 0) {
  console.error(`typedoc exited with ${r.status}`)
  process.exit(1)
}
const missing = []
for (const [entry, mod] of [
  ['index', './dist/index.js'],
  ['compat', './dist/compat.js'],
]) {
  for (const name of Object.keys(require(path.join(root, mod)))) {
    const pages = ['classes', 'functions', 'variables'].map((d) => path.join(out, d, `${entry}.${name}.html`))
    const page = pages.find((p) => existsSync(p))
    if (!page) missing.push(`${entry}.${name}: no page`)
    else if (!/class="tsd-comment tsd-typography"/.test(readFileSync(page, 'utf8')))
      missing.push(`${entry}.${name}: no doc comment`)
  }
}
if (missing.length > 0) {
  console.error(`docs/api lacks:\n${missing.join('\n')}`)
  process.exit(1)
}
console.log('docs/api documents every export of sharmipc and sharmipc/compat')
