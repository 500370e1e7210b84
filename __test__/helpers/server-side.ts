// A server or a client of the server tests, in a process of its own, told what to do over the
// child_process IPC pipe. Usage: node --import tsx server-side.ts <name> server|client|idle [optionsJson]
// A server answers a request with `<its pid>:<the request>`; a client checks that. `idle`: `count`
// clients (the options' `count`) in this one process, which connect and then do nothing.
import { connect, serve, type Channel } from '../../index'

const [name, role, optionsJson] = process.argv.slice(2)
// `silent` (a client's): its handler takes requests and never answers them.
const { silent, count, ...options } = JSON.parse(optionsJson ?? '{}')
const reply = (m: unknown) => process.send!(m)

function fail(e: unknown): never {
  const err = e as Error & { code?: string }
  process.send!({ openError: { code: err.code, message: err.message, name: err.name } }, () => process.exit(0))
  throw e
}

if (role === 'server') {
  let server
  try {
    server = serve(name, { ...options, onRequest: (data) => Buffer.from(`${process.pid}:${data}`) })
  } catch (e) {
    fail(e)
  }
  process.on('message', async (cmd: any) => {
    if (cmd.op === 'clients') reply({ clients: server.clients.length })
    if (cmd.op === 'close') {
      await server.close()
      process.exit(0)
    }
  })
  reply({ ready: true })
} else if (role === 'idle') {
  const chans = Array.from({ length: count }, () => connect(name, options))
  void Promise.all(chans.map((c) => c.waitForPeer(60_000))).then(
    () => reply({ ready: true }),
    (e) => fail(e),
  )
  process.on('message', async (cmd: any) => {
    if (cmd.op === 'close') {
      await Promise.all(chans.map((c) => c.close()))
      process.exit(0)
    }
  })
} else {
  let ch: Channel
  try {
    ch = connect(name, silent ? { ...options, onRequest: (_data, ctx) => void ctx.answerLater() } : options)
  } catch (e) {
    fail(e)
  }
  let connects = 0
  ch.on('connect', () => connects++)
  /** `n` requests, `k` at a time; counts right answers, wrong ones and failures by code. */
  const burst = async (n: number, k: number, timeoutMs: number) => {
    let next = 0
    let right = 0
    let wrong = 0
    const failures: Record<string, number> = {}
    const loop = async () => {
      while (next < n) {
        const i = next++
        const data = `${process.pid}/${i}`
        try {
          const answer = (await ch.request(Buffer.from(data), { timeoutMs })).toString()
          if (answer.endsWith(`:${data}`)) right++
          else wrong++
        } catch (e) {
          const code = (e as { code?: string }).code ?? String(e)
          failures[code] = (failures[code] ?? 0) + 1
        }
      }
    }
    await Promise.all(Array.from({ length: k }, loop))
    return { right, wrong, failures }
  }
  let flooding = false
  process.on('message', async (cmd: any) => {
    switch (cmd.op) {
      case 'wait':
        await ch.waitForPeer(cmd.timeoutMs)
        reply({ connected: true, connects })
        break
      case 'burst':
        reply(await burst(cmd.n, cmd.k, cmd.timeoutMs ?? 30_000))
        break
      case 'flood': {
        // Requests as fast as the ring takes them until told to stop; replies how many.
        flooding = true
        let answered = 0
        reply({ flooding: true })
        while (flooding) {
          await Promise.all(Array.from({ length: 256 }, () => ch.request(Buffer.alloc(512)).then(() => answered++)))
        }
        reply({ answered })
        break
      }
      case 'stop':
        flooding = false
        break
      case 'request':
        try {
          reply({ answer: (await ch.request(Buffer.from(cmd.data), { timeoutMs: cmd.timeoutMs })).toString() })
        } catch (e) {
          reply({ code: (e as { code?: string }).code, message: (e as Error).message })
        }
        break
      case 'connects':
        reply({ connects })
        break
      case 'close':
        await ch.close()
        process.exit(0)
    }
  })
  reply({ ready: true, channel: ch.name })
}
