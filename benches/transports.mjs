// The transports the benchmark compares, behind one small interface:
//
//   const t = await transports[kind].connect(role, setup, { onMessage, onRequest })
//   t.send(buf)        → true, or false when the caller must `await t.drain()` first.
//                        `taken` says whether a false send took the message (a socket queues it;
//                        sharmipc refuses it and the caller sends it again after the drain).
//   t.request(buf)     → Promise<Buffer>   (the peer's onRequest answers)
//   t.close()          → Promise<void>
//
// `role` is 'a' (the side that creates/listens) or 'b'. Every transport moves whole messages in
// order; handlers get a Buffer (possibly a view) per message.
import net from 'node:net'
import { once } from 'node:events'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

// ---------------------------------------------------------------------------------------------
// sharmipc
// ---------------------------------------------------------------------------------------------

function sharmipc(options = {}) {
  return {
    name: options.latency ? 'sharmipc (latency mode)' : 'sharmipc',
    sendTakesOnFalse: false,
    async connect(role, setup, { onMessage, onRequest }) {
      const { open } = require('sharmipc')
      const ch = open(setup.name, {
        capacity: setup.capacity ?? 1 << 20,
        onRequest: onRequest ?? ((d) => d),
        ...(options.latency ? { latencyMode: true } : {}),
        ...(process.env.SHARMIPC_BENCH_OPTIONS ? JSON.parse(process.env.SHARMIPC_BENCH_OPTIONS) : {}),
      })
      if (onMessage) ch.on('message', onMessage)
      await ch.waitForPeer(10_000)
      return {
        send: (buf) => ch.send(buf),
        drain: () => once(ch, 'drain'),
        request: (buf) => ch.request(buf, { timeoutMs: 60_000 }),
        close: () => ch.close(),
      }
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Node `net` over a Unix domain socket, length-prefixed frames
// ---------------------------------------------------------------------------------------------

// Frame: u32 payload length, u32 id (0: send-and-forget; bit 31 set: an answer), payload.
export const ANSWER = 0x8000_0000

export function frame(id, payload) {
  const f = Buffer.allocUnsafe(8 + payload.length)
  f.writeUInt32LE(payload.length, 0)
  f.writeUInt32LE(id, 4)
  payload.copy(f, 8)
  return f
}

/** Splits a byte stream into frames; calls `onFrame(id, payload)` with a view per frame. */
export function deframer(onFrame) {
  let pending = null
  return (chunk) => {
    let buf = pending === null ? chunk : Buffer.concat([pending, chunk])
    let off = 0
    while (buf.length - off >= 8) {
      const len = buf.readUInt32LE(off)
      if (buf.length - off - 8 < len) break
      onFrame(buf.readUInt32LE(off + 4), buf.subarray(off + 8, off + 8 + len))
      off += 8 + len
    }
    pending = off === buf.length ? null : buf.subarray(off)
  }
}

const uds = {
  name: 'Unix socket',
  sendTakesOnFalse: true,
  async connect(role, setup, { onMessage, onRequest }) {
    let sock
    let server = null
    if (role === 'a') {
      server = net.createServer()
      server.listen(setup.path)
      await once(server, 'listening')
      setup.ready?.()
      ;[sock] = await once(server, 'connection')
    } else {
      sock = net.connect(setup.path)
      await once(sock, 'connect')
    }
    sock.setNoDelay(true)
    const pending = new Map()
    let nextId = 1
    const answer = onRequest ?? ((d) => d)
    sock.on(
      'data',
      deframer((id, payload) => {
        if (id === 0) onMessage?.(payload)
        else if (id & ANSWER) {
          const p = pending.get(id & ~ANSWER)
          pending.delete(id & ~ANSWER)
          p(payload)
        } else sock.write(frame((id | ANSWER) >>> 0, answer(payload)))
      }),
    )
    sock.on('error', () => {})
    return {
      send: (buf) => sock.write(frame(0, buf)),
      drain: () => once(sock, 'drain'),
      request: (buf) => {
        const id = nextId
        nextId = nextId === 0x7fff_ffff ? 1 : nextId + 1
        sock.write(frame(id, buf))
        return new Promise((resolve) => pending.set(id, resolve))
      },
      close: async () => {
        sock.end()
        sock.destroy()
        if (server) await new Promise((r) => server.close(r))
      },
    }
  },
}

// ---------------------------------------------------------------------------------------------
// child_process IPC, serialization: 'advanced' (the channel between the bench and its peer)
// ---------------------------------------------------------------------------------------------

// Messages are Buffers (send-and-forget) or [id, Buffer] (requests: id > 0; answers: -id).
// Control messages of the bench are plain objects with a `ctl` field and are ignored here.
const childIpc = {
  name: 'child_process IPC',
  sendTakesOnFalse: true,
  async connect(role, setup, { onMessage, onRequest }) {
    const port = setup.port // the ChildProcess (parent side) or `process` (child side)
    const pending = new Map()
    let nextId = 1
    const answer = onRequest ?? ((d) => d)
    const listener = (m) => {
      if (Array.isArray(m)) {
        const [id, d] = m
        if (id > 0) port.send([-id, answer(Buffer.from(d.buffer, d.byteOffset, d.byteLength))])
        else {
          const p = pending.get(-id)
          pending.delete(-id)
          p(d)
        }
      } else if (m instanceof Uint8Array) onMessage?.(Buffer.from(m.buffer, m.byteOffset, m.byteLength))
    }
    port.on('message', listener)
    let waiting = null
    return {
      // `send` returns false when the pipe's backlog is long; the message is queued regardless.
      send: (buf) => port.send(buf),
      drain: () => {
        waiting ??= new Promise((resolve) => port.send({ ctl: 'noop' }, () => resolve())).finally(() => {
          waiting = null
        })
        return waiting
      },
      request: (buf) => {
        const id = nextId++
        port.send([id, buf])
        return new Promise((resolve) => pending.set(id, resolve))
      },
      close: async () => {
        port.off('message', listener)
      },
    }
  },
}

export const transports = {
  sharmipc: sharmipc(),
  'sharmipc-latency': sharmipc({ latency: true }),
  uds,
  ipc: childIpc,
}
