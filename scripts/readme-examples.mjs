// Keeps the README's code in step with examples/: every JavaScript or TypeScript block in
// README.md is the whole of a file under examples/ (which CI runs, scripts/run-examples.mjs),
// named by a comment on the line before it (and a block with `await using` must have "Node 24"
// in the lines before its comment):
//
//   <!-- example: examples/usage.mjs -->
//   ```js
//   ...the file...
//   ```
//
//   node scripts/readme-examples.mjs           checks; exits 1 naming each block that differs
//   node scripts/readme-examples.mjs --write   copies the files into the README
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const readmePath = path.join(root, 'README.md')
const CODE = /^(js|javascript|mjs|cjs|ts|typescript|mts)$/
const MARK = /^<!-- example: (examples\/[\w.-]+) -->$/

const write = process.argv.includes('--write')
const lines = readFileSync(readmePath, 'utf8').split('\n')
const problems = []
const out = []
let shown = 0
for (let i = 0; i < lines.length; i++) {
  const fence = /^```(\S*)\s*$/.exec(lines[i])
  if (!fence) {
    out.push(lines[i])
    continue
  }
  let end = i + 1
  while (end < lines.length && !/^```\s*$/.test(lines[end])) end++
  const body = lines.slice(i + 1, end).join('\n')
  const at = `README.md:${i + 1}`
  if (!CODE.test(fence[1])) {
    out.push(...lines.slice(i, end + 1))
    i = end
    continue
  }
  let k = out.length - 1
  while (k >= 0 && out[k].trim() === '') k--
  const mark = k >= 0 ? MARK.exec(out[k]) : null
  if (!mark) {
    problems.push(`${at}: a ${fence[1]} block without "<!-- example: examples/FILE -->" on the line before it`)
    out.push(...lines.slice(i, end + 1))
  } else if (!existsSync(path.join(root, mark[1]))) {
    problems.push(`${at}: ${mark[1]} does not exist`)
    out.push(...lines.slice(i, end + 1))
  } else {
    shown++
    const file = readFileSync(path.join(root, mark[1]), 'utf8').trimEnd()
    if (file !== body.trimEnd()) {
      if (!write) problems.push(`${at}: the block differs from ${mark[1]} (node scripts/readme-examples.mjs --write)`)
    }
    out.push(lines[i], ...(write ? file.split('\n') : lines.slice(i + 1, end)), lines[end])
    // `await using` runs on Node 24 and later only: the text before such a block must say so.
    if (/\bawait using\b/.test(file)) {
      const before = out.slice(Math.max(0, k - 6), k).join(' ')
      if (!/Node 24/.test(before)) problems.push(`${at}: ${mark[1]} uses await using; say before it which Node runs it`)
    }
  }
  i = end
}
if (write) writeFileSync(readmePath, out.join('\n'))
for (const p of problems) console.error(p)
if (problems.length > 0) process.exit(1)
console.log(`README.md: ${shown} code blocks, each the content of a file under examples/${write ? ' (written)' : ''}`)
