import { execFile } from 'node:child_process'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { leftoverSegments, spawnPeer, uniqueName } from './helpers'

const PREFIX = 'life'
const script = path.join(__dirname, 'helpers', 'lifetime.ts')
const run = (name: string, mode: string) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', script, name, mode], { timeout: 20_000 })

for (const [title, mode, expected] of [
  ['a process whose only channel is unref()ed exits by itself and removes the segment', 'unref', /^exit 0/m],
  ['a closed channel leaves no thread behind: the process exits by itself', 'close', /^exit 0/m],
  // The only other thing in that process is an unref'd 300 ms timer: without the channel's hold on
  // the event loop, the process would exit before it fires.
  ['an open channel keeps its process alive like a socket until it is closed', 'ref', /still alive\nexit 0/],
  ['process.exit() without close still detaches and removes the segment', 'exit', /^exit 0/m],
] as const) {
  test(title, async (t) => {
    const name = uniqueName(PREFIX)
    const { stdout } = await run(name, mode)
    t.regex(stdout, expected)
    t.deepEqual(leftoverSegments(name), [])
  })
}

test('an unref()ed channel in latency mode lets its process exit while the peer keeps sending', async (t) => {
  const name = uniqueName(PREFIX)
  const peer = await spawnPeer(name, 'echo')
  t.deepEqual(await peer.cmd({ op: 'flood', ms: 15_000 }), { flooding: true })
  const { stdout } = await run(name, 'unref-latency')
  t.regex(stdout, /^got messages: true$/m)
  const m = /^exit 0 after (\d+) ms/m.exec(stdout)
  t.truthy(m, stdout)
  // The peer sends for 15 s; a process held by the polling would live that long.
  t.true(Number(m![1]) < 10_000, stdout)
  await peer.close()
  t.deepEqual(leftoverSegments(name), [])
})

test.after.always('no segment of these tests is left in /dev/shm', (t) => {
  t.deepEqual(leftoverSegments(`${PREFIX}-${process.pid}-`), [])
})
