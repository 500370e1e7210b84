import { execFile } from 'node:child_process'
import { existsSync, statSync, truncateSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'

import test, { type ExecutionContext } from 'ava'

import { open } from '../index'
import { killAllPeers, leftoverSegments, type Peer, type RunAs, spawnPeer, spawnPeerAs, uniqueName } from './helpers'
import { only } from './helpers/platform'

// These tests switch to user nobody and read file modes in /dev/shm.
const linuxTest = only(['linux'], 'these tests switch to user nobody and read file modes in /dev/shm')

const PREFIX = 'access'

/**
 * Tests that switch to user `nobody` need root. As another user they are skipped, and say why
 * (ava lists a skipped test with its title).
 */
const IS_ROOT = process.platform === 'linux' && process.getuid?.() === 0
const NEEDS_ROOT =
  process.platform === 'linux'
    ? ' [skipped: needs root, to run a process as user nobody]'
    : ' [skipped: linux only, these tests switch to user nobody and read file modes in /dev/shm]'
const asRoot = IS_ROOT ? test : test.skip
const asRootSerial = IS_ROOT ? test.serial : test.serial.skip
const rootTitle = (title: string): string => (IS_ROOT ? title : title + NEEDS_ROOT)
const facade = path.join(__dirname, '..', 'dist', 'index.js')

/** Runs a one-line script as user `nobody` that opens `name` and prints what happened. */
async function openAsNobody(name: string): Promise<{ code?: string; message?: string; ok?: boolean }> {
  const script = `
    const { open } = require(${JSON.stringify(facade)})
    try {
      const ch = open(${JSON.stringify(name)})
      console.log(JSON.stringify({ ok: true }))
      ch.close()
    } catch (e) {
      console.log(JSON.stringify({ code: e.code, message: e.message }))
    }`
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], {
    uid: 65534,
    gid: 65534,
    cwd: '/tmp',
    timeout: 20_000,
  })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

asRoot(rootTitle('a channel is created owner-only (0600) and another user cannot open it'), async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name)
  t.is(statSync(`/dev/shm${ch.segmentName}`).mode & 0o777, 0o600)
  const r = await openAsNobody(name)
  t.is(r.code, 'ERR_SHARM_OS')
  t.regex(r.message!, /permission denied opening shared memory .* belongs to another user/)
  await ch.close()
})

asRoot(rootTitle('mode: 0o666 lets a process of another user join'), async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name, { mode: 0o666 })
  t.is(statSync(`/dev/shm${ch.segmentName}`).mode & 0o777, 0o666)
  t.deepEqual(await openAsNobody(name), { ok: true })
  await ch.close()
})

/**
 * Two users sharing a channel through a group: the owner is root in group nogroup, so the segment
 * it creates with mode 0o660 is root:nogroup, which user nobody (group nogroup) may read and
 * write but, in the sticky /dev/shm, not remove.
 */
const OWNER: RunAs = { uid: 0, gid: 65534 }
const NOBODY: RunAs = { uid: 65534, gid: 65534 }
const SHARED = { mode: 0o660 }

/** Starts the owner (creating the channel) and the non-owner, and sees them talk. */
async function sharedPair(t: ExecutionContext, name: string): Promise<[Peer, Peer]> {
  const owner = await spawnPeerAs(OWNER, name, 'echo', SHARED)
  const other = await spawnPeerAs(NOBODY, name, 'echo')
  await talk(t, owner, other, 'before')
  return [owner, other]
}

/** Both peers answer each other's requests. */
async function talk(t: ExecutionContext, a: Peer, b: Peer, what: string): Promise<void> {
  t.true(a.hello.ready, `${what}: the first could not open: ${JSON.stringify(a.hello)}`)
  t.true(b.hello.ready, `${what}: the second could not open: ${JSON.stringify(b.hello)}`)
  t.deepEqual(await a.cmd({ op: 'request', data: `${what} a`, timeoutMs: 5000 }), { answer: `${what} a` })
  t.deepEqual(await b.cmd({ op: 'request', data: `${what} b`, timeoutMs: 5000 }), { answer: `${what} b` })
}

asRootSerial(
  rootTitle('a group-shared channel whose non-owner closed last opens again, for the owner and for the non-owner'),
  async (t) => {
    const name = uniqueName(PREFIX)
    const file = `/dev/shm/sharm.${name}`
    const [owner, other] = await sharedPair(t, name)
    const st = statSync(file)
    t.deepEqual([st.uid, st.gid, st.mode & 0o777], [0, 65534, 0o660])
    await owner.close()
    await other.close()
    t.true(existsSync(file), "nobody may not remove the owner's segment: it stays")

    // The owner comes back first, then the non-owner.
    const owner2 = await spawnPeerAs(OWNER, name, 'echo', SHARED)
    const other2 = await spawnPeerAs(NOBODY, name, 'echo')
    await talk(t, owner2, other2, 'owner first')
    await owner2.close()
    await other2.close()
    t.true(existsSync(file))

    // The non-owner comes back first (and reuses the owner's segment in place), then the owner.
    const left = statSync(file)
    const other3 = await spawnPeerAs(NOBODY, name, 'echo', SHARED)
    const reused = statSync(file)
    t.deepEqual([reused.ino, reused.uid, reused.mode & 0o777], [left.ino, 0, 0o660])
    const owner3 = await spawnPeerAs(OWNER, name, 'echo', SHARED)
    await talk(t, other3, owner3, 'non-owner first')
    await other3.close()
    await owner3.close()
    t.false(existsSync(file), 'the owner, closing last, removed it')
  },
)

asRootSerial(
  rootTitle('a group-shared channel whose two sides were killed opens again for the non-owner first'),
  async (t) => {
    const name = uniqueName(PREFIX)
    const file = `/dev/shm/sharm.${name}`
    const [owner, other] = await sharedPair(t, name)
    await owner.kill()
    await other.kill()
    const left = statSync(file)
    const other2 = await spawnPeerAs(NOBODY, name, 'echo', SHARED)
    t.is(statSync(file).ino, left.ino, 'reused in place')
    const owner2 = await spawnPeerAs(OWNER, name, 'echo', SHARED)
    await talk(t, other2, owner2, 'after')
    await other2.close()
    await owner2.close()
    t.false(existsSync(file))
  },
)

asRootSerial(
  rootTitle('a group-shared segment truncated after its two sides were killed is rebuilt in place by the non-owner'),
  async (t) => {
    const name = uniqueName(PREFIX)
    const file = `/dev/shm/sharm.${name}`
    const [owner, other] = await sharedPair(t, name)
    await owner.kill()
    await other.kill()
    const whole = statSync(file)
    truncateSync(file, 8192)
    const other2 = await spawnPeerAs(NOBODY, name, 'echo', SHARED)
    const rebuilt = statSync(file)
    t.deepEqual([rebuilt.ino, rebuilt.size], [whole.ino, whole.size], 'the same file, its length back')
    const owner2 = await spawnPeerAs(OWNER, name, 'echo', SHARED)
    await talk(t, other2, owner2, 'after')
    await other2.close()
    await owner2.close()
    t.false(existsSync(file))
  },
)

test('closing right after many sends still delivers every accepted message', async (t) => {
  const name = uniqueName(PREFIX)
  const ch = open(name, { capacity: 16 * 1024 })
  const peer = await spawnPeer(name, 'sink')
  await ch.waitForPeer(5000)
  // 10 MB through a 16 KiB ring: most of it is still queued when close() is called.
  const N = 10_000
  for (let i = 0; i < N; i++) {
    const b = Buffer.alloc(1000)
    b.writeUInt32LE(i, 0)
    t.true(ch.send(b))
  }
  t.log(`${ch.queuedBytes} bytes queued when close() was called`)
  await ch.close()
  let report: any
  const until = Date.now() + 60_000
  do report = await peer.cmd({ op: 'report' })
  while (report.received < N && Date.now() < until && (await new Promise((r) => setTimeout(r, 10, true))))
  t.is(report.received, N)
  t.is(report.outOfOrder, 0)
  await peer.close()
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
