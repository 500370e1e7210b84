import { execFile } from 'node:child_process'
import { statSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { open } from '../index'
import { killAllPeers, leftoverSegments, spawnPeer, uniqueName } from './helpers'

const PREFIX = 'access'
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

test('a channel is created owner-only (0600) and another user cannot open it', async (t) => {
  t.is(process.getuid?.(), 0, 'this test switches to user nobody, which needs root')
  const name = uniqueName(PREFIX)
  const ch = open(name)
  t.is(statSync(`/dev/shm${ch.segmentName}`).mode & 0o777, 0o600)
  const r = await openAsNobody(name)
  t.is(r.code, 'ERR_SHARM_OS')
  t.regex(r.message!, /permission denied opening shared memory .* belongs to another user/)
  await ch.close()
})

test('mode: 0o666 lets a process of another user join', async (t) => {
  t.is(process.getuid?.(), 0, 'this test switches to user nobody, which needs root')
  const name = uniqueName(PREFIX)
  const ch = open(name, { mode: 0o666 })
  t.is(statSync(`/dev/shm${ch.segmentName}`).mode & 0o777, 0o666)
  t.deepEqual(await openAsNobody(name), { ok: true })
  await ch.close()
})

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
  t.deepEqual(leftoverSegments(PREFIX), [])
})
