import { execFile } from 'node:child_process'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { leftoverSegments, uniqueName } from './helpers'

const PREFIX = 'life'
const script = path.join(__dirname, 'helpers', 'lifetime.ts')
const run = (name: string, mode: string) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', script, name, mode], { timeout: 20_000 })

test('a process whose only channel is unref()ed exits by itself and removes the segment', async (t) => {
  const name = uniqueName(PREFIX)
  const { stdout } = await run(name, 'unref')
  t.regex(stdout, /^exit 0/m)
  t.deepEqual(leftoverSegments(name), [])
})

test('a closed channel leaves no thread behind: the process exits by itself', async (t) => {
  const name = uniqueName(PREFIX)
  const { stdout } = await run(name, 'close')
  t.regex(stdout, /^exit 0/m)
  t.deepEqual(leftoverSegments(name), [])
})

test('an open channel keeps its process alive like a socket until it is closed', async (t) => {
  const name = uniqueName(PREFIX)
  // The only other thing in that process is an unref'd 300 ms timer: without the channel's hold
  // on the event loop, the process would exit before it fires.
  const { stdout } = await run(name, 'ref')
  t.regex(stdout, /still alive\nexit 0/)
  t.deepEqual(leftoverSegments(name), [])
})

test('process.exit() without close still detaches and removes the segment', async (t) => {
  const name = uniqueName(PREFIX)
  const { stdout } = await run(name, 'exit')
  t.regex(stdout, /^exit 0/m)
  t.deepEqual(leftoverSegments(name), [])
})

test.after.always('no segment of these tests is left in /dev/shm', (t) => {
  t.deepEqual(leftoverSegments(PREFIX), [])
})
