// The command line, run as a child process: bin/sharmipc.mjs.
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { connect, serve } from '../index'
import { channelKit, killAllPeers, leftoverSegments, spawnPeer, uniqueName } from './helpers'
import { only } from './helpers/platform'

const PREFIX = 'cli'
const { opened, open } = channelKit(PREFIX)
const bin = path.join(__dirname, '..', 'bin', 'sharmipc.mjs')
/** list, inspect and clean read the segment files in /dev/shm. */
const segmentsTest = only(['linux'], 'list, inspect and clean read the segment files in /dev/shm')
const { version } = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'))

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

test('--help and -h print the usage with the bench scenarios and exit 0', (t) => {
  for (const flag of ['--help', '-h']) {
    const r = cli(flag)
    t.is(r.code, 0, r.stderr)
    t.regex(r.stdout, /^usage: sharmipc <command>/)
    t.regex(r.stdout, /list \[--json\]/)
    t.regex(r.stdout, /\nscenarios: .*\bseq-1\b/)
    t.is(r.stderr, '')
  }
  const sub = cli('bench', '--help')
  t.is(sub.code, 0)
  t.regex(sub.stdout, /--rounds N/)
  const spread = cli('bench', '--spread', '--help')
  t.is(spread.code, 0, spread.stderr)
  t.regex(spread.stdout, /^usage: sharmipc bench --spread/)
})

test('--version prints the package version', (t) => {
  for (const flag of ['--version', '-v']) {
    const r = cli(flag)
    t.is(r.code, 0)
    t.is(r.stdout.trim(), version)
  }
})

test('a bad flag or command prints one line and the usage, exits 2, and shows no stack trace', (t) => {
  for (const args of [['list', '--bogus'], ['bench', '--rounds=2', '--bogus'], ['frobnicate'], [], ['inspect']]) {
    const r = cli(...args)
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    const [first, blank, usage] = r.stderr.split('\n')
    t.regex(first!, /^sharmipc: /, args.join(' '))
    t.is(blank, '')
    t.regex(usage!, /^usage: sharmipc/)
    t.notRegex(r.stderr, /\n\s+at /, 'no stack trace')
    t.is(r.stdout, '')
  }
})

segmentsTest(
  'list and inspect show a live channel: sides, pids, alive, generations, capacity, ring indices',
  async (t) => {
    const name = uniqueName(PREFIX)
    const ch = open(name, { capacity: 8192 })
    const peer = await spawnPeer(name, 'echo')
    await ch.waitForPeer(5000)
    const peerPid: number = (await peer.cmd({ op: 'report' })).pid
    // Hold the peer's messages unread, so that the ring towards this side has something in it.
    const it = ch.messages({ highWaterMark: 1 })
    await peer.cmd({ op: 'sendStrings', strings: Array.from({ length: 200 }, () => 'y'.repeat(100)) })
    await new Promise((r) => setTimeout(r, 100))

    const listed = cli('list', '--json')
    t.is(listed.code, 0, listed.stderr)
    const mine = JSON.parse(listed.stdout).find((i: any) => i.name === name)
    t.truthy(mine, `${name} is listed`)
    t.true(mine.live)
    t.is(mine.capacity, 8192)
    t.deepEqual(mine.flags, ['side0', 'side1'])
    t.deepEqual(
      mine.sides.map((s: any) => [s.pid, s.alive, s.held]),
      [
        [process.pid, true, true],
        [peerPid, true, true],
      ],
    )
    const text = cli('list')
    t.regex(text.stdout, /^name\s+sides\s+side 0 pid\s+side 1 pid\s+alive\s+generations\s+capacity\s+age/)
    t.regex(
      text.stdout,
      new RegExp(`${name}\\s+0,1\\s+${process.pid} alive\\s+${peerPid} alive\\s+yes\\s+\\d+/\\d+\\s+8 KiB`),
    )

    const inspected = cli('inspect', name, '--json')
    t.is(inspected.code, 0, inspected.stderr)
    const info = JSON.parse(inspected.stdout)
    t.is(info.rings.length, 2)
    const towardsUs = info.rings.find((r: any) => r.fromSide === 1)
    t.true(towardsUs.fill > 0, 'the unread messages are in the ring')
    t.is(towardsUs.fill, towardsUs.write - towardsUs.read)
    const human = cli('inspect', name)
    t.regex(human.stdout, /ring 1→0\s+fill \d+ bytes \([\d.]+ %\), write \d+, read \d+, handed \d+/)
    t.regex(human.stdout, new RegExp(`side 1\\s+pid ${peerPid}, ready, generation \\d+, held, alive`))
    await it.return!()
    await peer.close()
    await ch.close()
  },
)

segmentsTest("list and inspect show a server's lobby: its server, its clients and how many are alive", async (t) => {
  const name = uniqueName(PREFIX)
  const server = serve(name)
  const clients = [connect(name), connect(name)]
  try {
    await Promise.all(clients.map((c) => c.waitForPeer(10_000)))
    const text = cli('list')
    t.is(text.code, 0, text.stderr)
    t.regex(
      text.stdout,
      new RegExp(`\\n${name}\\s+lobby\\s+${process.pid} alive\\s+2 clients, 2 alive\\s+yes\\s+-\\s+a server's lobby`),
    )
    const json = JSON.parse(cli('list', '--json').stdout).find((i: any) => i.name === name)
    t.like(json, {
      lobby: true,
      live: true,
      lobbySummary: { serverPid: process.pid, serverAlive: true, clients: 2, clientsAlive: 2 },
    })
    const human = cli('inspect', name)
    t.is(human.code, 0, human.stderr)
    t.regex(
      human.stdout,
      new RegExp(`served by\\s+pid ${process.pid}, alive\\nclients\\s+2 places held, 2 by live processes`),
    )
  } finally {
    await Promise.all(clients.map((c) => c.close()))
    await server.close()
  }
})

segmentsTest('a process killed by SIGTERM leaves its segment; clean removes it, and refuses a live one', async (t) => {
  const name = uniqueName(PREFIX)
  const peer = await spawnPeer(name, 'echo')
  const file = `/dev/shm/sharm.${name}`
  t.true(existsSync(file))
  const exited = once(peer.child, 'exit')
  peer.child.kill('SIGTERM')
  await exited
  t.true(existsSync(file), 'the segment outlives a process killed by a signal')
  const listed = JSON.parse(cli('list', '--json').stdout).find((i: any) => i.name === name)
  t.false(listed.live)

  // A live channel is refused, and keeps working.
  const liveName = uniqueName(PREFIX)
  const ch = open(liveName)
  const refused = cli('clean', liveName)
  t.is(refused.code, 1)
  t.regex(refused.stdout, new RegExp(`kept ${liveName}: held by live pid ${process.pid}`))
  t.true(existsSync(`/dev/shm/sharm.${liveName}`))
  t.true(ch.capacity > 0, 'still open')

  const cleaned = cli('clean', name)
  t.is(cleaned.code, 0, cleaned.stderr)
  t.regex(cleaned.stdout, new RegExp(`removed ${name}`))
  t.false(existsSync(file))
  const again = cli('clean', name)
  t.is(again.code, 1)
  t.regex(again.stderr, /no channel .* on this machine/)
  // The name opens afresh.
  const reopened = open(name)
  t.is(reopened.name, name)
  await reopened.close()
  await ch.close()
})

segmentsTest('clean leaves alone what is not a segment of this version', (t) => {
  const name = uniqueName(PREFIX)
  const file = `/dev/shm/sharm.${name}`
  writeFileSync(file, Buffer.alloc(8192, 7))
  try {
    const r = cli('clean', name)
    t.is(r.code, 1)
    t.regex(r.stdout, new RegExp(`kept ${name}: not a sharmipc segment, not touched by this version`))
    t.true(existsSync(file))
    const shown = cli('inspect', name)
    t.regex(shown.stdout, /format\s+not a sharmipc segment/)
  } finally {
    rmSync(file, { force: true })
  }
})

test.after.always('no segment of these tests is left in /dev/shm', async (t) => {
  await killAllPeers()
  await Promise.all([...opened].map((ch) => ch.close()))
  t.deepEqual(leftoverSegments(PREFIX), [])
})
