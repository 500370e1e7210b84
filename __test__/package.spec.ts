// What the published package holds and how it loads: the file list of `npm pack`, the ES module
// and CommonJS entry points, and the error when no native binary matches the platform.
import { execFile } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

const root = path.join(__dirname, '..')
const exec = promisify(execFile)
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))

/** The TypeScript sources of the library, as paths without their extension. */
function sources(dir: string): string[] {
  return readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`
    if (e.isDirectory()) return sources(rel)
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [rel.slice(0, -3)] : []
  })
}

/** The build of every source file: its JS and its types. */
const COMPILED = ['index', 'compat', ...sources('lib'), 'binding'].flatMap((f) => [`dist/${f}.js`, `dist/${f}.d.ts`])

/** Files every published version must contain (npm adds package.json and README.md itself). */
const REQUIRED = [
  'README.md',
  'LICENSE',
  'CHANGELOG.md',
  'compat.d.mts',
  'compat.mjs',
  'index.d.mts',
  'index.mjs',
  'package.json',
  ...COMPILED,
].sort()
/** Files that may ship when they exist: the `npx sharmipc bench` command and its scripts. */
const OPTIONAL = [/^bin\/sharmipc\.mjs$/, /^benches\/[^/]+\.mjs$/]

async function packedFiles(): Promise<string[]> {
  const { stdout } = await exec('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root,
    shell: process.platform === 'win32',
    maxBuffer: 16 * 1024 * 1024,
  })
  const [report] = JSON.parse(stdout)
  return (report.files as { path: string }[]).map((f) => f.path.split(path.sep).join('/')).sort()
}

/** Files under `dir` of the repository matching one of OPTIONAL, as package paths. */
function optionalOnDisk(dir: string): string[] {
  const abs = path.join(root, dir)
  if (!existsSync(abs)) return []
  return readdirSync(abs)
    .map((f) => `${dir}/${f}`)
    .filter((f) => OPTIONAL.some((r) => r.test(f)))
}

test('npm pack ships the compiled JS, its types and the loader, nothing else', async (t) => {
  const files = await packedFiles()
  const unexpected = files.filter((f) => !REQUIRED.includes(f) && !OPTIONAL.some((r) => r.test(f)))
  t.deepEqual(unexpected, [], `files outside the allowed set: ${unexpected.join(', ')}`)
  const missing = REQUIRED.filter((f) => !files.includes(f))
  t.deepEqual(missing, [], `required files missing (is the build done?): ${missing.join(', ')}`)
  // The bench command and scripts that exist in the repository are all shipped.
  const onDisk = [...optionalOnDisk('bin'), ...optionalOnDisk('benches')].sort()
  t.deepEqual(
    onDisk.filter((f) => !files.includes(f)),
    [],
  )
})

test('the package names its license, repository, home page and bug tracker, and ships the license text', (t) => {
  t.is(pkg.license, 'MIT')
  t.regex(readFileSync(path.join(root, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) /)
  t.is(pkg.repository?.type, 'git')
  const m = /^git\+https:\/\/github\.com\/([\w.-]+\/[\w.-]+)\.git$/.exec(pkg.repository?.url ?? '')
  t.truthy(m, `repository.url: ${pkg.repository?.url}`)
  t.is(pkg.homepage, `https://github.com/${m![1]}#readme`)
  t.is(pkg.bugs?.url, `https://github.com/${m![1]}/issues`)
  t.regex(
    readFileSync(path.join(root, 'CHANGELOG.md'), 'utf8'),
    new RegExp(`^## ${pkg.version.replace(/\./g, '\\.')}$`, 'm'),
  )
})

test('every path package.json points at is in the package', async (t) => {
  const files = await packedFiles()
  const targets: string[] = [pkg.main, pkg.types]
  const walk = (v: unknown): void => {
    if (typeof v === 'string') targets.push(v)
    else if (v && typeof v === 'object') Object.values(v).forEach(walk)
  }
  walk(pkg.exports)
  walk(pkg.bin)
  walk(pkg.imports)
  const normalized = [...new Set(targets.map((p) => p.replace(/^\.\//, '')))]
  t.true(normalized.length >= 5, `expected main, types and the exports map, found ${normalized.join(', ')}`)
  t.deepEqual(
    normalized.filter((p) => !files.includes(p)),
    [],
  )
})

test('the package has no native binary of its own and no install script: binaries come as platform packages', (t) => {
  t.deepEqual(pkg.napi.binaryName, 'sharmipc')
  t.deepEqual([...pkg.napi.targets].sort(), [
    'aarch64-apple-darwin',
    'aarch64-unknown-linux-gnu',
    'aarch64-unknown-linux-musl',
    'x86_64-apple-darwin',
    'x86_64-pc-windows-msvc',
    'x86_64-unknown-linux-gnu',
    'x86_64-unknown-linux-musl',
  ])
  for (const s of ['install', 'preinstall', 'postinstall']) t.is(pkg.scripts[s], undefined, s)
  const dirs = readdirSync(path.join(root, 'npm')).sort()
  t.deepEqual(dirs, [
    'darwin-arm64',
    'darwin-x64',
    'linux-arm64-gnu',
    'linux-arm64-musl',
    'linux-x64-gnu',
    'linux-x64-musl',
    'win32-x64-msvc',
  ])
  for (const d of dirs) {
    const p = JSON.parse(readFileSync(path.join(root, 'npm', d, 'package.json'), 'utf8'))
    const [os, cpu, abi] = d.split('-')
    t.is(p.name, `sharmipc-${d}`)
    t.is(p.version, pkg.version, `${d} has the version of the main package`)
    t.deepEqual(p.os, [os])
    t.deepEqual(p.cpu, [cpu])
    t.deepEqual(p.files, [`sharmipc.${d}.node`])
    t.is(p.main, `sharmipc.${d}.node`)
    if (os === 'linux') t.deepEqual(p.libc, [abi === 'musl' ? 'musl' : 'glibc'])
    else t.is(p.libc, undefined)
  }
})

test('import and require give the same module: the same names and the same objects', async (t) => {
  const script = `
    import * as esm from 'sharmipc'
    import { createRequire } from 'node:module'
    const cjs = createRequire(import.meta.url)('sharmipc')
    console.log(JSON.stringify({
      esm: Object.keys(esm).sort(),
      cjs: Object.keys(cjs).sort(),
      sameOpen: esm.open === cjs.open,
      sameError: esm.SharmError === cjs.SharmError,
      defaultIsCjs: esm.default === cjs,
    }))`
  const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script], { cwd: root })
  const r = JSON.parse(stdout)
  t.true(r.cjs.includes('open') && r.cjs.includes('SharmError'), `CommonJS exports: ${r.cjs.join(', ')}`)
  t.deepEqual(r.esm, [...r.cjs, 'default'].sort(), 'index.mjs must re-export every name of the CommonJS build')
  t.true(r.sameOpen)
  t.true(r.sameError)
  t.true(r.defaultIsCjs)
})

test('sharmipc/compat: import and require give the same module, built on the same channel class', async (t) => {
  const script = `
    import * as esm from 'sharmipc/compat'
    import { Channel } from 'sharmipc'
    import { createRequire } from 'node:module'
    const cjs = createRequire(import.meta.url)('sharmipc/compat')
    const sm = new esm.SharmIpc('package-compat-' + process.pid, (data) => [true, data])
    console.log(JSON.stringify({
      esm: Object.keys(esm).sort(),
      cjs: Object.keys(cjs).sort(),
      sameClass: esm.SharmIpc === cjs.SharmIpc,
      defaultIsCjs: esm.default === cjs,
      nativeChannel: sm.channel instanceof Channel,
    }))
    await sm.dispose()`
  const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script], { cwd: root })
  const r = JSON.parse(stdout)
  t.deepEqual(r.cjs, ['PipeRole', 'SharmIpc', 'SharmNpc'])
  t.deepEqual(r.esm, [...r.cjs, 'default'].sort(), 'compat.mjs must re-export every name of the CommonJS build')
  t.true(r.sameClass)
  t.true(r.defaultIsCjs)
  t.true(r.nativeChannel, 'the compat class must sit on the Channel of the main entry, not a copy')
})

/**
 * Loads the package in `cwd` with node (`require`, or a static `import` of index.mjs) and returns
 * how that went: exit code and what was printed. A load error is an uncaught exception there.
 */
async function load(cwd: string, how: 'require' | 'import', env: NodeJS.ProcessEnv = process.env) {
  const args =
    how === 'require'
      ? ['-e', `require('.'); console.log('loaded')`]
      : ['--input-type=module', '-e', `import './index.mjs'; console.log('loaded')`]
  try {
    const { stdout, stderr } = await exec(process.execPath, args, { cwd, env })
    return { code: 0, stdout, stderr }
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string }
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

function platformParts(): { target: string; libc: RegExp } {
  const abi = process.platform === 'win32' ? '-msvc' : ''
  if (process.platform !== 'linux') return { target: `${process.platform}-${process.arch}${abi}`, libc: /\(Node v/ }
  const glibc = (process.report.getReport() as any).header.glibcVersionRuntime
  return {
    target: `linux-${process.arch}-${glibc ? 'gnu' : 'musl'}`,
    libc: glibc ? new RegExp(`, glibc ${glibc.replace('.', '\\.')} \\(Node v`) : /, musl libc \(Node v/,
  }
}

test('without a matching binary, require and import fail naming the platform and what was tried', async (t) => {
  // A copy of the package's JS without any .node file or platform package, outside the repository.
  const dir = mkdtempSync(path.join(tmpdir(), 'sharmipc-nobinary-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const f of ['package.json', 'index.mjs', ...COMPILED.filter((f) => f.endsWith('.js'))]) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true })
    copyFileSync(path.join(root, f), path.join(dir, f))
  }
  const { target, libc } = platformParts()
  for (const how of ['require', 'import'] as const) {
    const r = await load(dir, how)
    t.not(r.code, 0, `${how} must fail`)
    t.is(r.stdout, '')
    t.true(r.stderr.includes("code: 'ERR_SHARM_NO_BINARY'"), `${how}: ${r.stderr}`)
    t.true(r.stderr.includes('[cause]: '), `${how}: the loader's error is its cause: ${r.stderr}`)
    t.true(r.stderr.includes(`sharmipc: no native binary loads on ${process.platform} ${process.arch}`), r.stderr)
    t.regex(r.stderr, libc)
    t.true(r.stderr.includes(`./sharmipc.${target}.node (not found)`), r.stderr)
    t.true(r.stderr.includes(`sharmipc-${target} (not found)`), r.stderr)
  }
})

test('NAPI_RS_NATIVE_LIBRARY_PATH pointing at a missing file is reported as such', async (t) => {
  const missing = path.join(tmpdir(), `sharmipc-missing-${process.pid}.node`)
  const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: missing }
  const r = await load(root, 'require', env)
  t.not(r.code, 0)
  t.true(r.stderr.includes("code: 'ERR_SHARM_NO_BINARY'"), r.stderr)
  t.true(r.stderr.includes(`NAPI_RS_NATIVE_LIBRARY_PATH=${missing} replaces the search`), r.stderr)
  t.true(r.stderr.includes(`${missing} (not found)`), r.stderr)
  // The same build loads when the variable is not set, by require and by import.
  for (const how of ['require', 'import'] as const) {
    const ok = await load(root, how)
    t.is(ok.code, 0, ok.stderr)
    t.is(ok.stdout, 'loaded\n')
  }
})
