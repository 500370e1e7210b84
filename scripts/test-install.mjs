// Installs sharmipc the way a user gets it, without a compiler, and runs it.
//
// Uses the release build in the repository (builds it when missing), packs the main package and
// this platform's package (npm/<platform>/ plus the .node file) with `npm pack`, installs both
// tarballs into a fresh directory outside the repository with an empty npm cache, --offline, and
// a PATH without cargo or rustc, then, from there, runs two processes that talk over a channel
// (requests and send-and-forget, and a request through sharmipc/compat), once with the main side
// loaded by `import` and the peer by `require`, once the other way round, and type-checks an
// .mts and a .cts file against the installed types (sharmipc/compat's included). Before the
// install it lints the packed tarball: publint (strict: warnings fail too) and Are the Types
// Wrong? (@arethetypeswrong/cli) for both entry points, `sharmipc` and `sharmipc/compat`, under
// every module resolution TypeScript has (node10, node16 from CJS and ESM, bundler). Exits non-zero
// with a message saying what failed; removes its directory.
//
// Usage: node scripts/test-install.mjs   (npm run test:install)
import { spawnSync } from 'node:child_process'
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { publishedManifest } from './published-manifest.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
const win = process.platform === 'win32'
const REQUESTS = 300
const MESSAGES = 2000

class Failure extends Error {}
const fail = (msg) => {
  throw new Failure(msg)
}
const step = (msg) => console.log(`== test:install: ${msg}`)

/** Runs a command; fails with its output when it exits non-zero. Returns stdout. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    shell: win && cmd === 'npm',
    timeout: 300_000,
    maxBuffer: 64 * 1024 * 1024,
    ...opts,
  })
  if (r.error) fail(`${cmd} ${args.join(' ')} could not run: ${r.error.message}`)
  if (r.status !== 0) {
    fail(
      `${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal} (expected 0)\n` +
        `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`,
    )
  }
  return r.stdout
}

/** The npm/<dir> name of this host, as napi names it: linux-x64-gnu, darwin-arm64, win32-x64-msvc. */
function platformDir() {
  if (process.platform === 'linux') {
    const glibc = process.report.getReport().header.glibcVersionRuntime
    return `linux-${process.arch}-${glibc ? 'gnu' : 'musl'}`
  }
  return `${process.platform}-${process.arch}${win ? '-msvc' : ''}`
}

/** PATH without the directories that hold cargo, rustc or rustup. */
function pathWithoutRust() {
  const names = ['cargo', 'rustc', 'rustup'].flatMap((n) => (win ? [`${n}.exe`, n] : [n]))
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)
  const kept = dirs.filter((d) => !names.some((n) => existsSync(path.join(d, n))))
  return kept.join(path.delimiter)
}

/** The environment of the install and the smoke test: no npm_* variables of an outer `npm run`. */
function cleanEnv(cache, PATH) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)))
  for (const k of Object.keys(env)) if (k.toUpperCase() === 'PATH') delete env[k]
  return { ...env, PATH, npm_config_cache: cache, npm_config_offline: 'true', npm_config_update_notifier: 'false' }
}

/** The script of a dev dependency's command, run with this node (no shell, no npx). */
function devBin(pkgName, binName) {
  const dir = path.join(root, 'node_modules', pkgName)
  if (!existsSync(path.join(dir, 'package.json'))) fail(`${pkgName} is not installed in the repository: run npm ci`)
  const { bin } = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'))
  return path.join(dir, typeof bin === 'string' ? bin : bin[binName])
}

/** publint and Are the Types Wrong? on the packed main package; fails naming each problem. */
function lintPackage(tarball, env) {
  step(`publint --strict ${path.basename(tarball)}`)
  const lint = run(process.execPath, [devBin('publint', 'publint'), 'run', '--strict', '--pack', 'false', tarball], {
    cwd: root,
    env,
  })
  process.stdout.write(lint)
  step(`attw ${path.basename(tarball)} --entrypoints . ./compat (every module resolution)`)
  const r = spawnSync(
    process.execPath,
    [devBin('@arethetypeswrong/cli', 'attw'), tarball, '--entrypoints', '.', './compat', '--format', 'json'],
    { cwd: root, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  )
  let report
  try {
    report = JSON.parse(r.stdout)
  } catch {
    fail(`attw printed no report (exit ${r.status}):\n${r.stdout}\n${r.stderr}`)
  }
  const problems = report.analysis.problems ?? []
  if (problems.length > 0) fail(`attw found problems:\n${JSON.stringify(problems, null, 2)}`)
  const entries = report.analysis.entrypoints
  for (const entry of ['.', './compat']) {
    const kinds = Object.entries(entries[entry]?.resolutions ?? {})
    const bad = kinds.filter(([, v]) => !v.resolution?.isTypeScript).map(([k]) => k)
    if (kinds.length < 4 || bad.length > 0) {
      fail(
        `attw: ${entry} has no types under ${bad.join(', ') || 'some resolutions'} (${kinds.map(([k]) => k).join(', ')})`,
      )
    }
  }
  console.log('attw: no problems; sharmipc and sharmipc/compat have types under node10, node16 (CJS, ESM) and bundler')
}

/**
 * A copy of the files `npm pack` takes from the repository, with the package.json that is
 * published (scripts/published-manifest.mjs: no clone-only scripts).
 */
function stagePublished(dest, env) {
  const out = run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, env })
  const [report] = JSON.parse(out.slice(out.indexOf('[')))
  for (const { path: f } of report.files) {
    mkdirSync(path.dirname(path.join(dest, f)), { recursive: true })
    copyFileSync(path.join(root, f), path.join(dest, f))
  }
  writeFileSync(path.join(dest, 'package.json'), JSON.stringify(publishedManifest(pkg), null, 2) + '\n')
}

function packOne(dir, dest, env) {
  const out = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dest], { cwd: dir, env })
  const [report] = JSON.parse(out.slice(out.indexOf('[')))
  return report
}

// The two sides of the smoke test, written into the install directory. `main` opens the channel,
// starts the peer as a second process, asks REQUESTS requests (one at a time, then all at once),
// sends MESSAGES numbered messages and asks the peer what it got.
const mainSource = (load, peerFile) => `${load}
const name = 'install-' + process.pid
const fail = (m) => { console.error('smoke: ' + m); process.exit(1) }
const ch = open(name)
const peer = fork(${JSON.stringify(peerFile)}, [name], { stdio: 'inherit' })
const peerExit = new Promise((resolve) => peer.once('exit', (code, signal) => resolve(code ?? signal)))
ch.waitForPeer(20000).then(async () => {
  if (!(ch instanceof Channel)) fail('open() did not return a Channel')
  for (let i = 0; i < ${REQUESTS} / 2; i++) {
    const a = (await ch.request(Buffer.from('ping ' + i), { timeoutMs: 10000 })).toString()
    if (a !== 'pong ping ' + i) fail('request ' + i + ': expected "pong ping ' + i + '", got ' + JSON.stringify(a))
  }
  const all = await Promise.all(Array.from({ length: ${REQUESTS} / 2 }, (_, i) => ch.request(Buffer.from('many ' + i), { timeoutMs: 10000 })))
  all.forEach((a, i) => { if (a.toString() !== 'pong many ' + i) fail('concurrent request ' + i + ' got ' + a) })
  let sent = 0
  for (let i = 0; i < ${MESSAGES}; i++) {
    const b = Buffer.alloc(100)
    b.writeUInt32LE(i, 0)
    while (!ch.send(b)) await new Promise((r) => setTimeout(r, 1))
    sent++
  }
  const count = JSON.parse((await ch.request(Buffer.from('count'), { timeoutMs: 10000 })).toString())
  if (count.received !== sent || !count.inOrder) fail('peer got ' + JSON.stringify(count) + ', expected ' + sent + ' in order')
  try { await ch.request(Buffer.from('throw'), { timeoutMs: 10000 }); fail('a throwing handler must reject') }
  catch (e) { if (!(e instanceof SharmError) || e.code !== 'ERR_SHARM_REMOTE') fail('expected ERR_SHARM_REMOTE, got ' + e) }
  // sharmipc/compat: two instances of the compat class on one channel, in this process.
  const a = new SharmIpc(name + '-compat', (d) => [true, Buffer.concat([Buffer.from('compat '), d])])
  const b = new SharmIpc(name + '-compat', (_msgId, _d) => {})
  if (!(a.channel instanceof Channel)) fail('sharmipc/compat is not built on the Channel of sharmipc')
  await b.channel.waitForPeer(10000)
  const [ok, data] = await b.remoteRequestAsync(Buffer.from('x'), 10000)
  if (!ok || data.toString() !== 'compat x') fail('compat request: expected [true, "compat x"], got ' + [ok, data])
  await b.dispose()
  await a.dispose()
  await ch.close()
  const code = await peerExit
  if (code !== 0) fail('peer exited with ' + code + ', expected 0')
  console.log('smoke ok: ${REQUESTS} requests answered, ' + sent + ' messages delivered in order, a sharmipc/compat request answered, peer exited cleanly')
}).catch((e) => fail(e && e.stack || String(e)))
`

const peerSource = (load) => `${load}
const name = process.argv[2]
let received = 0
let inOrder = true
setTimeout(() => { console.error('smoke peer: no end after 60 s'); process.exit(2) }, 60000).unref()
const ch = open(name, {
  onRequest: (data) => {
    const s = data.toString()
    if (s === 'count') return Buffer.from(JSON.stringify({ received, inOrder }))
    if (s === 'throw') throw new Error('asked to throw')
    return Buffer.from('pong ' + s)
  },
})
ch.on('message', (d) => { if (d.readUInt32LE(0) !== received) inOrder = false; received++ })
ch.on('disconnect', () => ch.close().then(() => process.exit(0)))
`

const ESM_LOAD = `import { fork } from 'node:child_process'\nimport { open, Channel, SharmError } from 'sharmipc'\nimport { SharmIpc } from 'sharmipc/compat'`
const CJS_LOAD = `const { fork } = require('node:child_process')\nconst { open, Channel, SharmError } = require('sharmipc')\nconst { SharmIpc } = require('sharmipc/compat')`

const typesMts = `import { open, Channel, SharmError, TimeoutError, type OpenOptions } from 'sharmipc'
import sharmipc from 'sharmipc'
import { SharmIpc, type RequestResult } from 'sharmipc/compat'
const options: OpenOptions = { capacity: 65536, onRequest: (data: Buffer) => data }
const ch: Channel = open('types', options)
const answer: Promise<Buffer> = ch.request(Buffer.from('x'), { timeoutMs: 10 })
const sent: boolean = sharmipc.open('types2').send(new Uint8Array(1))
export const checks = [answer, sent, new SharmError('ERR_SHARM_OS', 'x') instanceof Error, TimeoutError.name]
// @ts-expect-error: a SharmError's code is one of sharmipc's codes
new SharmError('ERR_SHARM_X', 'x')
ch.send('text') // a string is a payload (UTF-8)
// @ts-expect-error: a number is not a payload
ch.send(42)
const sm = new SharmIpc('types3', (data: Buffer) => [true, data])
const result: Promise<RequestResult> = sm.remoteRequestAsync(null, 10)
export const compatChecks = [result, sm.remoteRequest(Buffer.alloc(1))[0] satisfies boolean]
`
const typesCts = `import sharmipc = require('sharmipc')
const ch: sharmipc.Channel = sharmipc.open('types')
const answer: Promise<Buffer> = ch.request(Buffer.from('x'))
export const checks = [answer, ch.requestSync(Buffer.alloc(1), { timeoutMs: 10 }) satisfies Buffer]
// @ts-expect-error: open needs a name
sharmipc.open()
import compat = require('sharmipc/compat')
export const later = new compat.SharmIpc('types4', (msgId: number, data: Buffer) => void [msgId, data])
`

function main() {
  const dir = platformDir()
  const npmDir = path.join(root, 'npm', dir)
  const binaryName = `${pkg.napi.binaryName}.${dir}.node`
  if (!existsSync(path.join(npmDir, 'package.json'))) {
    fail(
      `no platform package for this host: expected ${path.relative(root, npmDir)}/package.json (napi create-npm-dirs)`,
    )
  }
  const binary = path.join(root, 'dist', binaryName)
  if (!existsSync(binary) || !existsSync(path.join(root, 'dist', 'binding.js'))) {
    step(`dist/${binaryName} or dist/binding.js missing: npm run build:native`)
    run('npm', ['run', 'build:native'], { cwd: root, stdio: 'inherit' })
  }
  if (!existsSync(path.join(root, 'dist', 'index.js')) || !existsSync(path.join(root, 'dist', 'index.d.ts'))) {
    step('dist/index.js missing: npm run build:ts')
    run('npm', ['run', 'build:ts'], { cwd: root, stdio: 'inherit' })
  }

  const tmp = mkdtempSync(path.join(tmpdir(), 'sharmipc-install-'))
  const rel = path.relative(root, tmp)
  if (!rel.startsWith('..') && !path.isAbsolute(rel)) fail(`temporary directory ${tmp} is inside the repository`)
  try {
    const cache = path.join(tmp, 'empty-cache')
    const packs = path.join(tmp, 'packs')
    const stage = path.join(tmp, 'platform-package')
    const stageMain = path.join(tmp, 'main-package')
    const app = path.join(tmp, 'app')
    for (const d of [cache, packs, stage, stageMain, app]) mkdirSync(d)

    const PATH = pathWithoutRust()
    const env = cleanEnv(cache, PATH)
    for (const tool of ['cargo', 'rustc']) {
      const r = spawnSync(tool, ['--version'], { env, encoding: 'utf8', shell: false })
      if (!r.error) fail(`${tool} is still on the reduced PATH (${PATH}): ${r.stdout.trim()}`)
    }
    const nodeCheck = spawnSync('node', ['--version'], { env, encoding: 'utf8', shell: win })
    if (nodeCheck.status !== 0) fail(`node is not on the PATH once cargo and rustc are removed: ${PATH}`)

    step(`packing sharmipc and ${pkg.name}-${dir} into ${packs}`)
    for (const f of readdirSync(npmDir)) copyFileSync(path.join(npmDir, f), path.join(stage, f))
    copyFileSync(binary, path.join(stage, binaryName))
    stagePublished(stageMain, env)
    const mainPack = packOne(stageMain, packs, env)
    const platformPack = packOne(stage, packs, env)
    const mainFiles = mainPack.files.map((f) => f.path)
    if (mainFiles.some((f) => f.endsWith('.node'))) fail(`the main package carries a binary: ${mainFiles.join(', ')}`)
    const platformFiles = platformPack.files.map((f) => f.path).sort()
    const wantPlatform = ['README.md', binaryName, 'package.json'].sort()
    if (JSON.stringify(platformFiles) !== JSON.stringify(wantPlatform)) {
      fail(`platform package holds ${platformFiles.join(', ')}, expected ${wantPlatform.join(', ')}`)
    }

    lintPackage(path.join(packs, mainPack.filename), env)

    step(`npm install --offline with an empty cache and no cargo/rustc on PATH, in ${app}`)
    writeFileSync(
      path.join(app, 'package.json'),
      JSON.stringify({ name: 'sharmipc-install-check', version: '1.0.0', private: true }, null, 2),
    )
    const install = spawnSync(
      'npm',
      [
        'install',
        '--offline',
        '--cache',
        cache,
        '--no-audit',
        '--no-fund',
        path.join(packs, mainPack.filename),
        path.join(packs, platformPack.filename),
      ],
      { cwd: app, env, encoding: 'utf8', shell: win, timeout: 300_000 },
    )
    if (install.status !== 0) fail(`npm install exited with ${install.status}\n${install.stdout}\n${install.stderr}`)
    const warnings = install.stderr.split('\n').filter((l) => /npm warn/i.test(l) && !/EBADENGINE/.test(l))
    if (warnings.length > 0) fail(`npm install of the packages warned:\n${warnings.join('\n')}`)
    const installedPkg = JSON.parse(readFileSync(path.join(app, 'node_modules', pkg.name, 'package.json'), 'utf8'))
    if (installedPkg.scripts !== undefined)
      fail(`the published package.json has scripts: ${Object.keys(installedPkg.scripts)}`)
    const installed = path.join(app, 'node_modules', pkg.name)
    const installedNative = readdirSync(installed).filter((f) => f.endsWith('.node'))
    if (installedNative.length > 0) fail(`node_modules/${pkg.name} holds ${installedNative.join(', ')}`)
    if (!existsSync(path.join(app, 'node_modules', `${pkg.name}-${dir}`, binaryName))) {
      fail(`node_modules/${pkg.name}-${dir}/${binaryName} is missing after the install`)
    }

    writeFileSync(path.join(app, 'main.mjs'), mainSource(ESM_LOAD, 'peer.cjs'))
    writeFileSync(path.join(app, 'peer.cjs'), peerSource(CJS_LOAD))
    writeFileSync(path.join(app, 'main.cjs'), mainSource(CJS_LOAD, 'peer.mjs'))
    writeFileSync(path.join(app, 'peer.mjs'), peerSource(ESM_LOAD))
    for (const [file, what] of [
      ['main.mjs', 'import (ESM), peer by require (CommonJS)'],
      ['main.cjs', 'require (CommonJS), peer by import (ESM)'],
    ]) {
      step(`two-process smoke test: ${what}`)
      const out = run(process.execPath, [file], { cwd: app, env, timeout: 120_000 })
      process.stdout.write(out)
      if (!out.includes('smoke ok:')) fail(`${file} ended without reporting success`)
    }

    step('npx sharmipc bench --quick --only seq-1 (the command-line tool of the installed package)')
    const bench = run('npx', ['--offline', 'sharmipc', 'bench', '--quick', '--only', 'seq-1', '--out', 'bench-out'], {
      cwd: app,
      env,
      timeout: 120_000,
    })
    process.stdout.write(bench)
    if (!/^\| RPC 1 B, sequential +\| .*calls\/s/m.test(bench)) fail('npx sharmipc bench printed no table row')
    if (/goal|NOT met/i.test(bench)) fail("npx sharmipc bench printed the project's goals without --goals")
    step('npx sharmipc bench --spread --help (the several-channels bench is reachable from the command line)')
    const spread = run('npx', ['--offline', 'sharmipc', 'bench', '--spread', '--help'], { cwd: app, env })
    if (!spread.includes('usage: sharmipc bench --spread'))
      fail(`npx sharmipc bench --spread --help printed:\n${spread}`)
    if (!existsSync(path.join(app, 'bench-out', 'bench.json'))) fail('npx sharmipc bench wrote no bench.json')

    step('type check of an .mts and a .cts file against the installed types (module nodenext)')
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')
    if (!existsSync(tsc)) fail(`typescript is not installed in the repository (${tsc}): run npm ci`)
    writeFileSync(path.join(app, 'types.mts'), typesMts)
    writeFileSync(path.join(app, 'types.cts'), typesCts)
    writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify(
        {
          compilerOptions: {
            module: 'nodenext',
            moduleResolution: 'nodenext',
            target: 'ES2022',
            strict: true,
            noEmit: true,
            typeRoots: [path.join(root, 'node_modules', '@types')],
            types: ['node'],
          },
          files: ['types.mts', 'types.cts'],
        },
        null,
        2,
      ),
    )
    run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: app, env })

    if (process.platform === 'linux') {
      const left = readdirSync('/dev/shm').filter((f) => f.startsWith('sharm.install-'))
      if (left.length > 0) fail(`segments left in /dev/shm: ${left.join(', ')}`)
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
  console.log(`test:install: OK (${pkg.name}@${pkg.version} and ${pkg.name}-${dir} installed offline without Rust)`)
}

try {
  main()
} catch (e) {
  console.error(`test:install FAILED: ${e instanceof Failure ? e.message : e.stack}`)
  process.exit(1)
}
