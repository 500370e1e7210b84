// Shared helpers of the two-process tests.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'

import { open as openChannel, type Channel, type OpenOptions } from '../../index'

const peerScript = path.join(__dirname, 'peer.ts')
let counter = 0

/** A channel name unique to this test run; `prefix` groups the names of one test file. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 8)}`
}

/** Files under /dev/shm whose name starts with `prefix`: segments, and their sides' loop bells (`<segment>@bell-a`). */
export function leftoverSegments(prefix: string): string[] {
  try {
    return readdirSync('/dev/shm').filter((f) => f.startsWith(`sharm.${prefix}`))
  } catch {
    return []
  }
}

/**
 * Waits until everything `ch` accepted has left this process for the ring. A request goes to the
 * peer attached when it leaves this process: one sent before the peer is killed fails with that
 * peer only once it is out (the flush runs on the next tick, and a peer already reaped by then
 * is not the one it goes to).
 */
export async function leftThisProcess(ch: Channel): Promise<void> {
  while (ch.queuedBytes > 0) await new Promise((r) => setImmediate(r))
}

/** Which of `files` (from {@link leftoverSegments}) are segments, not loop bells. */
export function segmentsOnly(files: string[]): string[] {
  return files.filter((f) => !f.includes('@'))
}

export interface Peer {
  child: ChildProcess
  /** The first message the peer sent: `{ ready: true }` or `{ openError }`. */
  hello: any
  /** Sends a command and resolves with the peer's next reply. */
  cmd(c: object): Promise<any>
  /** Waits for the next reply without sending anything. */
  next(): Promise<any>
  /** Asks the peer to close its channel and waits until it exited. */
  close(): Promise<void>
  /** SIGKILLs the peer and waits until it is gone. */
  kill(): Promise<void>
}

const live = new Set<ChildProcess>()
/** The peer's pid, for children that are the shell of an unreaped peer. */
const unreaped = new Map<ChildProcess, number>()

/** Kills every peer still running (for `test.after.always`, so a failed test cannot hang the run). */
export async function killAllPeers(): Promise<void> {
  const all = [...live].filter((c) => c.exitCode === null && c.signalCode === null)
  live.clear()
  await Promise.all(
    all.map((c) => {
      const exited = once(c, 'close')
      const pid = unreaped.get(c)
      if (pid === undefined) {
        c.kill('SIGKILL')
      } else {
        // Kill the peer, then let its shell reap it: killing the shell would orphan it.
        try {
          process.kill(pid, 'SIGKILL')
        } catch {}
        c.stdin!.end()
      }
      return exited
    }),
  )
}

/**
 * Starts a peer process on channel `name` (see peer.ts for the modes; `script` runs another peer,
 * such as compat-peer.ts; `execArgv`: more node options, such as `--expose-gc`) and waits until
 * it opened.
 */
export async function spawnPeer(
  name: string,
  mode: string,
  options: object = {},
  script = peerScript,
  execArgv: string[] = [],
): Promise<Peer> {
  return spawnPeerAs({}, name, mode, options, script, execArgv)
}

/** A user and group to run a peer as (needs root); the default is ours. */
export interface RunAs {
  uid?: number
  gid?: number
}

/** As {@link spawnPeer}, as another user or group. */
export async function spawnPeerAs(
  user: RunAs,
  name: string,
  mode: string,
  options: object = {},
  script = peerScript,
  execArgv: string[] = [],
): Promise<Peer> {
  const child = fork(script, [name, mode, JSON.stringify(options)], {
    execArgv: ['--import', 'tsx', ...execArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    ...user,
  })
  return talkTo(child)
}

/**
 * Starts a peer in a PID namespace of its own (`unshare --pid --fork --mount-proc`, root only),
 * as a process in another container would be: its pid there (1) names another process here.
 */
export async function spawnPeerInPidNamespace(name: string, mode: string): Promise<Peer> {
  const child = spawn(
    'unshare',
    [
      '--pid',
      '--fork',
      '--kill-child',
      '--mount-proc',
      process.execPath,
      '--import',
      'tsx',
      peerScript,
      name,
      mode,
      '{}',
    ],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  )
  return talkTo(child)
}

/** A peer whose parent never reaps it: once killed, it stays a zombie until `release()`. */
export interface UnreapedPeer extends Peer {
  /** The peer's own pid (`child` is the shell that started it and does not wait for it). */
  pid: number
  /** SIGKILLs the peer and waits until it is a zombie (killed, not reaped). */
  kill(): Promise<void>
  /** Lets the shell reap the peer once it exits (at once if it is a zombie), and waits for that. */
  release(): Promise<void>
}

/**
 * Starts a peer through a shell that puts it in the background and then only reads its stdin, so
 * nobody reaps the peer when it dies; closing that stdin makes the shell wait for it and exit.
 */
export async function spawnUnreapedPeer(name: string, mode: string): Promise<UnreapedPeer> {
  const child = spawn(
    'sh',
    ['-c', '"$0" "$@" & read _; wait', process.execPath, '--import', 'tsx', peerScript, name, mode, '{}'],
    { stdio: ['pipe', 'inherit', 'inherit', 'ipc'] },
  )
  const peer = await talkTo(child)
  if (!peer.hello.ready) throw new Error(`the peer could not open: ${JSON.stringify(peer.hello)}`)
  const pid: number = (await peer.cmd({ op: 'report' })).pid
  unreaped.set(child, pid)
  void once(child, 'close').then(() => unreaped.delete(child))
  const release = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'close')
    child.stdin!.end()
    await exited
  }
  return {
    ...peer,
    pid,
    // A dead peer does not read the message, and its shell reaps it all the same.
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) child.send({ op: 'close' })
      await release()
    },
    release,
    kill: async () => {
      process.kill(pid, 'SIGKILL')
      while (processState(pid) !== 'Z') await new Promise((r) => setTimeout(r, 1))
    },
  }
}

/** The state letter of process `pid` (`R`, `S`, `Z`...), from /proc. */
function processState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2)[0]
}

/** Waits for the first message of a started peer and returns the handle to speak to it. */
async function talkTo(child: ChildProcess): Promise<Peer> {
  live.add(child)
  // 'close' comes after the IPC channel is drained, unlike 'exit': a message sent just before
  // exiting is still seen.
  const exited = once(child, 'close')
  void exited.then(() => live.delete(child))
  const next = async () => {
    const [m] = (await Promise.race([once(child, 'message'), exited.then(() => [{ exited: true }])])) as [any]
    return m
  }
  const hello = await next()
  return {
    child,
    hello,
    next,
    cmd: (c) => {
      const r = next()
      child.send(c)
      return r
    },
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.send({ op: 'close' })
      await exited
    },
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGKILL')
      await exited
    },
  }
}

/**
 * Channel helpers for one test file: `open` remembers every channel it opens (so that a failed
 * test cannot leave one open, and the run hanging; close `opened` in an `after.always` hook), and
 * `pair` opens our side and starts a peer of `mode`, then waits until both see each other.
 */
export function channelKit(prefix: string) {
  const opened = new Set<Channel>()
  const open = (name: string, options?: OpenOptions): Channel => {
    const ch = openChannel(name, options)
    opened.add(ch)
    return ch
  }
  const pair = async (mode: string, options: OpenOptions = {}, peerOptions: object = options) => {
    const name = uniqueName(prefix)
    const ch = open(name, options)
    const peer = await spawnPeer(name, mode, peerOptions)
    await ch.waitForPeer(5000)
    return { name, ch, peer }
  }
  return { opened, open, pair }
}

/** A Readable of `n` bytes where the byte at offset o is o & 0xff, in 64 KiB chunks. */
export function pattern(n: number, onDestroy?: () => void): Readable {
  const block = Buffer.alloc(65536)
  for (let i = 0; i < block.length; i++) block[i] = i & 0xff
  let left = n
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null)
      const k = Math.min(left, block.length)
      left -= k
      this.push(k === block.length ? block : block.subarray(0, k))
    },
    destroy(err, cb) {
      onDestroy?.()
      cb(err)
    },
  })
}

/** A test-side process started by {@link runSide}. */
export interface Side {
  child: ChildProcess
  /** Its output so far. */
  out: { stdout: string; stderr: string }
  /** Resolves with its exit code and signal. */
  exited: Promise<unknown[]>
  /** Waits until its stdout says `word`; throws if it exits first. */
  until(word: string): Promise<void>
}

/** Runs `script` (a file of these helpers, in TypeScript) with `args` and `env`. */
export function runSide(script: string, args: string[], env: NodeJS.ProcessEnv): Side {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, script), ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = { stdout: '', stderr: '' }
  child.stdout!.on('data', (d) => (out.stdout += d))
  child.stderr!.on('data', (d) => (out.stderr += d))
  const exited = once(child, 'exit')
  const until = async (word: string) => {
    while (!out.stdout.includes(word)) {
      if (child.exitCode !== null) throw new Error(`${script} exited early: ${out.stderr}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  return { child, out, exited, until }
}
