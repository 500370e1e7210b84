// Many channels in one process, all to one other process: traffic on every one at once, then every
// wake-up thread and every segment is gone after close.
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { rmSync, statSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import path from 'node:path'

import test from 'ava'

import { open, type Channel } from '../index'
import { leftoverSegments, segmentsOnly, uniqueName } from './helpers'
import { only } from './helpers/platform'

// These tests count threads in /proc/self/status and segment files in /dev/shm.
const linuxTest = only(['linux'], 'these tests count threads in /proc/self/status and segment files in /dev/shm')
import { channelNames, drive, handlerFor, Receiver, threadCount } from './helpers/many'

const PREFIX = 'many'
const CHANNELS = 100
const MESSAGES = 3000 // per channel and direction
const REQUESTS = 500 // per channel and direction
const INFLIGHT = 4 // per channel
const KiB = 1024

const children = new Set<ChildProcess>()
const opened = new Set<Channel>()

// After a failed test: the peer is asked to close its channels (killed if it does not within 3 s),
// then ours close, and whatever segment of this file's channels is still there is removed.
test.after.always(async () => {
  await Promise.all(
    [...children]
      .filter((c) => c.exitCode === null && c.signalCode === null)
      .map(async (c) => {
        const exited = once(c, 'close')
        c.send({ op: 'close' })
        const timer = setTimeout(() => c.kill('SIGKILL'), 3000)
        await exited
        clearTimeout(timer)
      }),
  )
  await Promise.all([...opened].map((ch) => ch.close()))
  for (const f of leftoverSegments(`${PREFIX}-${process.pid}-`)) rmSync(`/dev/shm/${f}`, { force: true })
})

/** Starts many-peer.ts on `count` channels named `<prefix>-<i>`; `send` resolves with its next reply. */
function startPeer(prefix: string, count: number) {
  const child = fork(path.join(__dirname, 'helpers', 'many-peer.ts'), [prefix, String(count)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  children.add(child)
  const exited = once(child, 'close')
  const next = async (): Promise<any> => {
    const [m] = (await Promise.race([once(child, 'message'), exited.then(() => [{ exited: true }])])) as [any]
    if (m.error !== undefined) throw new Error(`the peer failed: ${m.error}`)
    return m
  }
  return {
    next,
    exited,
    send: (cmd: object) => {
      const r = next()
      child.send(cmd)
      return r
    },
  }
}

// Serial: both tests count this process's threads.
linuxTest.serial(
  `${CHANNELS} channels to one other process carry requests and ordered messages at once, then leave no thread and no segment`,
  async (t) => {
    // The libuv thread pool starts on first use: start it now, so that it is in both counts.
    await stat(__dirname)
    const threadsBefore = threadCount()

    // Even channels with the default ring (1 MiB), odd ones with 64 KiB: this side creates them all.
    const prefix = uniqueName(PREFIX)
    const names = channelNames(prefix, CHANNELS)
    const capacityOf = (i: number) => (i % 2 === 0 ? 1024 * KiB : 64 * KiB)
    const receiver = new Receiver(CHANNELS)
    const errors: string[] = []
    const channels = names.map((name, i) => {
      const ch = open(name, { onRequest: handlerFor(i), ...(i % 2 === 1 ? { capacity: 64 * KiB } : {}) })
      opened.add(ch)
      ch.on('message', receiver.listener(i))
      ch.on('error', (e: Error) => errors.push(`${name}: ${e.message}`))
      return ch
    })
    t.is(threadCount(), threadsBefore + CHANNELS, 'one wake-up thread per open channel')

    // One segment per channel, of 4 KiB + 2 × (256 B + capacity).
    t.is(segmentsOnly(leftoverSegments(prefix)).length, CHANNELS)
    names.forEach((name, i) => {
      t.is(statSync(`/dev/shm/sharm.${name}`).size, 4096 + 2 * (256 + capacityOf(i)), name)
    })

    const peer = startPeer(prefix, CHANNELS)
    const hello = await peer.next()
    t.true(hello.ready, JSON.stringify(hello))
    t.is(hello.threadsOpen - hello.threadsBefore, CHANNELS, 'the peer has one wake-up thread per channel too')
    t.deepEqual(
      hello.capacities,
      names.map((_, i) => capacityOf(i)),
      'the joining side adopts each creator capacity',
    )
    await Promise.all(channels.map((ch) => ch.waitForPeer(5000)))

    // Both processes send and request on all channels at the same time.
    const traffic = { op: 'drive', messages: MESSAGES, requests: REQUESTS, inflight: INFLIGHT }
    const theirs = peer.send(traffic)
    const mine = await drive(channels, traffic)
    const { driven } = await theirs
    for (const r of [mine, driven]) {
      t.deepEqual(r.wrongAnswers, [])
      t.is(r.sent, CHANNELS * MESSAGES)
      t.is(r.answered, CHANNELS * REQUESTS)
    }

    // Every message arrived, in order, on its own channel, on both sides.
    const all = new Array(CHANNELS).fill(MESSAGES)
    let report: any
    for (let k = 0; k < 500; k++) {
      report = await peer.send({ op: 'report' })
      if (report.received.every((n: number) => n >= MESSAGES) && receiver.received.every((n) => n >= MESSAGES)) break
      await new Promise((r) => setTimeout(r, 20))
    }
    t.deepEqual(report.received, all)
    t.deepEqual(report.bad, [])
    t.deepEqual(report.errors, [])
    t.deepEqual(receiver.received, all)
    t.deepEqual(receiver.bad, [])
    t.deepEqual(errors, [])
    for (const ch of channels) t.is(ch.stats().errors, 0)

    // Closing: no thread and no segment is left, on either side.
    const closed = await peer.send({ op: 'close' })
    t.is(closed.threads, hello.threadsBefore, 'the peer is back to its thread count before opening')
    await peer.exited
    await Promise.all(channels.map((ch) => ch.close()))
    t.is(threadCount(), threadsBefore, 'closed channels leave no thread')
    t.deepEqual(leftoverSegments(prefix), [])
  },
)

linuxTest.serial('opening and closing channels over and over leaves no thread and no segment', async (t) => {
  await stat(__dirname)
  const threadsBefore = threadCount()
  const prefix = uniqueName(PREFIX)
  for (let round = 0; round < 5; round++) {
    const channels = channelNames(`${prefix}-${round}`, 50).map((name) => {
      const ch = open(name, { capacity: 16 * KiB })
      opened.add(ch)
      return ch
    })
    t.is(threadCount(), threadsBefore + 50)
    await Promise.all(channels.map((ch) => ch.close()))
    t.is(threadCount(), threadsBefore)
  }
  t.deepEqual(leftoverSegments(prefix), [])
})
