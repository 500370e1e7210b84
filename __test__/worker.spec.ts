// A channel opened in a worker_threads Worker talks to another process, and the worker's side is
// released however the worker ends: close(), process.exit() inside the worker (the exit hook), or
// worker.terminate() from outside.
import path from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { open, type Channel } from '../index'
import { killAllPeers, leftoverSegments, spawnPeer, uniqueName } from './helpers'

const PREFIX = 'worker'
const script = path.join(__dirname, 'helpers', 'worker-side.mjs')
const MESSAGES = 1000
const opened = new Set<Channel>()

/** Calls `probe` until `done` holds for its result or `ms` pass; returns the last result. */
async function until<T>(probe: () => Promise<T>, done: (r: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const r = await probe()
    if (done(r) || Date.now() > deadline) return r
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

for (const [leave, how, exitCode] of [
  ['close', 'closing its channel', 0],
  ['exit', 'calling process.exit() without close in the tick of its sends', 0],
  ['stay', 'being terminated with its channel open', 1],
] as const) {
  test(`a worker thread's channel talks to another process, and its side is free after ${how}`, async (t) => {
    const name = uniqueName(PREFIX)
    const peer = await spawnPeer(name, 'echo')
    t.deepEqual(peer.hello, { ready: true })

    const worker = new Worker(script, { workerData: { name, messages: MESSAGES, leave } })
    // Read now: Node ≥ 26 reports -1 once the thread has exited, which it may have by the check.
    const threadId = worker.threadId
    const messages: any[] = []
    let firstMessage!: () => void
    const gotFirst = new Promise<void>((resolve) => (firstMessage = resolve))
    worker.on('message', (m) => {
      messages.push(m)
      firstMessage()
    })
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
    let workerError: Error | undefined
    worker.once('error', (e) => (workerError = e))

    await Promise.race([gotFirst, exited])
    t.is(workerError, undefined, `the worker failed: ${workerError?.stack}`)
    t.deepEqual(messages[0], { answer: `from worker ${threadId}`, sent: MESSAGES, pid: process.pid })
    if (leave === 'stay') await worker.terminate()
    t.is(await exited, exitCode)
    t.is(workerError, undefined, `the worker failed: ${workerError?.stack}`)
    if (leave === 'close') t.deepEqual(messages[1], { closed: true })

    // The peer process got every message the worker sent, in order.
    const report = await until(
      () => peer.cmd({ op: 'report' }),
      (r) => r.received >= MESSAGES,
    )
    t.is(report.received, MESSAGES)
    t.is(report.outOfOrder, 0)
    t.is(report.lastError, null)

    // The worker's side was released although this process (its pid) lives on: this thread can
    // take it and talk to the same peer. Were it still held, open would throw BusyError.
    const ch = open(name)
    opened.add(ch)
    await ch.waitForPeer(5_000)
    const answer = await ch.request(Buffer.from('main thread'), { timeoutMs: 5_000 })
    t.is(answer.toString(), 'main thread')
    await ch.close()
    await peer.close()
    t.deepEqual(leftoverSegments(name), [])
  })
}

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  // Names are `${PREFIX}-${pid}-...`: only this run's segments, not those of another run.
  const left = leftoverSegments(`${PREFIX}-${process.pid}-`)
  // Remove what a failed test left behind: open takes over a segment whose sides are all gone and
  // close, as the last side out, removes it. The check below still fails.
  for (const f of left) {
    try {
      await open(f.slice('sharm.'.length)).close()
    } catch {
      // Still held by someone: leave it.
    }
  }
  t.deepEqual(left, [])
})
