/**
 * Streams: a request with a streamed body and/or a streamed answer, over stream frames (records
 * of the stream kind; the record's id is the stream id, its generation field the frame type).
 * Each direction has a credit window, so a stream never fills the ring and ordinary messages
 * pass it.
 *
 * @packageDocumentation
 */
import { Readable } from 'node:stream'

import { fromNative, QueueFullError, RemoteError } from './errors'
import { native as binding } from './internal/binding'
import { asError, describe, EMPTY } from './internal/validate'

const { SEND_QUEUE_FULL } = binding

// Frame types, carried in the record's generation field; the record's id is the stream id.
const F_OPEN_BODY = 1 // opener → peer: open, a body follows; payload: the request data
const F_OPEN = 2 // opener → peer: open, no body; payload: the request data
const F_DATA = 3 // a chunk, in the sender's direction
const F_END = 4 // no more chunks in the sender's direction
const F_ERROR = 5 // the stream failed, both directions end; payload: the message
const F_CANCEL = 6 // the sender stopped reading: stop sending to it
const F_CREDIT = 7 // the sender consumed this many more bytes (payload: u32 LE)

/** Bytes a stream direction may have on the way or unread; what keeps a stream from filling the ring. */
const STREAM_WINDOW = 256 * 1024
/** Largest chunk in one frame. */
const STREAM_FRAME = 64 * 1024

/** Answers a stream request: may return a Readable (streamed back), bytes, or nothing. */
export type StreamHandler = (
  data: Buffer,
  body: Readable,
) => Readable | Buffer | Uint8Array | undefined | void | Promise<Readable | Buffer | Uint8Array | undefined | void>

/** What the stream table needs from its channel. */
export interface StreamHost {
  /** This side's number (0 or 1): the low bit of the ids of streams it opens. */
  side(): number
  /** Sends a frame; the native send contract (2: queue full). Throws native errors. */
  send(id: number, type: number, bytes: Uint8Array): number
  /** Asks for a call of `resume()` once the queue has room again. */
  wantDrain(): void
  handler(): StreamHandler | undefined
}

/** One stream, seen from one side. */
class StreamState {
  /** What this side receives (the answer for the opener, the body for the other side). */
  incoming: Readable
  /** What this side sends, once known. */
  source: Readable | null = null
  /** Bytes this side may still send. */
  credit = STREAM_WINDOW
  /** Chunks read from `source` that wait for credit or queue room. */
  backlog: Buffer[] = []
  sourceEnded = false
  outDone = false
  inDone = false
  received = 0
  granted = 0
  constructor(
    readonly id: number,
    readonly table: StreamTable,
  ) {
    this.incoming = new Readable({
      highWaterMark: STREAM_WINDOW,
      read: () => this.grant(),
      destroy: (err, cb) => {
        // Destroyed here before the peer ended it: tell the peer to stop sending.
        if (!this.inDone) {
          this.inDone = true
          this.table.frame(this.id, F_CANCEL)
        }
        this.table.settle(this)
        cb(err)
      },
    })
    this.incoming.once('end', () => {
      this.inDone = true
      this.table.settle(this)
    })
  }

  /**
   * Gives the peer credit for everything received so far, at least `min` bytes of it: called
   * while `incoming` has room below its high-water mark (after a push that said so, or when the
   * reader asks for more), so what is buffered here stays within about two windows.
   */
  grant(min = 1): void {
    const more = this.received - this.granted
    if (more < min || this.inDone) return
    const b = Buffer.allocUnsafe(4)
    b.writeUInt32LE(more, 0)
    if (this.table.frame(this.id, F_CREDIT, b)) this.granted = this.received
  }

  /** Starts sending `source` (a Readable) or `bytes`. */
  sendFrom(source: Readable | Uint8Array | undefined): void {
    if (source === undefined) {
      this.sourceEnded = true
    } else if (source instanceof Uint8Array) {
      for (let o = 0; o < source.length; o += STREAM_FRAME) {
        this.backlog.push(Buffer.from(source.buffer, source.byteOffset + o, Math.min(STREAM_FRAME, source.length - o)))
      }
      this.sourceEnded = true
    } else {
      this.source = source
      source.on('data', (chunk: unknown) => {
        if (typeof chunk === 'string') chunk = Buffer.from(chunk)
        if (!(chunk instanceof Uint8Array)) {
          this.fail(new TypeError(`stream chunks must be Buffers or Uint8Arrays, got ${describe(chunk)}`))
          return
        }
        const c = chunk as Uint8Array
        for (let o = 0; o < c.length; o += STREAM_FRAME) {
          this.backlog.push(Buffer.from(c.buffer, c.byteOffset + o, Math.min(STREAM_FRAME, c.length - o)))
        }
        this.pump()
      })
      source.once('end', () => {
        this.sourceEnded = true
        this.pump()
      })
      source.once('error', (e) => this.fail(e))
      source.once('close', () => {
        if (!this.sourceEnded && !this.outDone) this.fail(new Error('the stream being sent was destroyed'))
      })
    }
    this.pump()
  }

  /** Sends what credit and queue room allow; pauses the source when they run out. */
  pump(): void {
    while (!this.outDone && this.backlog.length > 0) {
      const chunk = this.backlog[0]
      if (this.credit <= 0) break
      const part = chunk.length <= this.credit ? chunk : chunk.subarray(0, this.credit)
      if (!this.table.frame(this.id, F_DATA, part)) break
      this.credit -= part.length
      if (part === chunk) this.backlog.shift()
      else this.backlog[0] = chunk.subarray(part.length)
    }
    if (this.outDone) return
    if (this.backlog.length === 0 && this.sourceEnded) {
      if (this.table.frame(this.id, F_END)) {
        this.outDone = true
        this.table.settle(this)
      }
      return
    }
    // Hold the source while chunks wait; let it flow again once they went.
    if (this.source !== null) {
      if (this.backlog.length > 0) this.source.pause()
      else this.source.resume()
    }
  }

  /**
   * This side failed the stream: the peer hears why, both directions end here. `local`: also
   * destroy `incoming` with the error (not when the failure is the handler's own, whose body
   * may have no 'error' listener: the handler knows already).
   */
  fail(err: Error, local = true): void {
    if (!this.outDone || !this.inDone) this.table.frame(this.id, F_ERROR, Buffer.from(err.message))
    this.abort(local ? err : undefined)
  }

  /** Ends both directions here, `incoming` with `err` if given (nothing is sent). */
  abort(err?: Error): void {
    this.outDone = true
    this.backlog = []
    if (this.source !== null && !this.source.destroyed) this.source.destroy()
    if (!this.inDone) {
      this.inDone = true
      this.incoming.destroy(err)
    }
    this.table.settle(this)
  }

  /** A frame from the peer. */
  onFrame(type: number, payload: Buffer): void {
    switch (type) {
      case F_DATA:
        if (this.inDone) return // cancelled here; the peer has not seen it yet
        this.received += payload.length
        // Room left below the high-water mark: credit now (in quarter windows); otherwise when
        // the reader asks for more.
        if (this.incoming.push(payload)) this.grant(STREAM_WINDOW / 4)
        break
      case F_END:
        if (this.inDone) return
        this.incoming.push(null)
        break
      case F_CREDIT:
        if (payload.length === 4) this.credit += payload.readUInt32LE(0)
        this.pump()
        break
      case F_CANCEL:
        // The peer stops reading what this side sends.
        this.outDone = true
        this.backlog = []
        if (this.source !== null && !this.source.destroyed) this.source.destroy()
        this.table.settle(this)
        break
      case F_ERROR:
        this.abort(new RemoteError(payload.toString('utf8')))
        break
    }
  }
}

/** The streams of one channel. */
export class StreamTable {
  #streams = new Map<number, StreamState>()
  #next = 0
  #blocked = new Set<StreamState>()
  constructor(readonly host: StreamHost) {}

  get size(): number {
    return this.#streams.size
  }

  /** Opens a stream: returns the Readable of the answer. */
  open(data: Uint8Array, body: Readable | undefined): Readable {
    const id = this.#next++ * 2 + this.host.side()
    const st = new StreamState(id, this)
    this.#streams.set(id, st)
    let r: number
    try {
      r = this.host.send(id, body === undefined ? F_OPEN : F_OPEN_BODY, data)
    } catch (e) {
      st.abort(fromNative(e))
      return st.incoming
    }
    if (r === SEND_QUEUE_FULL) {
      st.abort(new QueueFullError('stream not opened: the send queue is full'))
      return st.incoming
    }
    if (body === undefined) {
      st.outDone = true // F_OPEN said there is no body
      this.settle(st)
    } else {
      st.sendFrom(body)
    }
    return st.incoming
  }

  /** A frame from the peer. */
  onFrame(id: number, type: number, payload: Buffer): void {
    const st = this.#streams.get(id)
    if (st !== undefined) {
      st.onFrame(type, payload)
      return
    }
    if ((type !== F_OPEN && type !== F_OPEN_BODY) || (id & 1) === this.host.side()) return // ended here
    const peerStream = new StreamState(id, this)
    this.#streams.set(id, peerStream)
    if (type === F_OPEN) {
      peerStream.inDone = true
      peerStream.incoming.push(null)
    }
    const handler = this.host.handler()
    if (handler === undefined) {
      peerStream.fail(new Error('the peer has no onStream handler'), false)
      return
    }
    // The request data is a view into a shared arena: copy it for the handler to keep.
    const data = Buffer.from(payload)
    let answer: ReturnType<StreamHandler>
    try {
      answer = handler(data, peerStream.incoming)
    } catch (e) {
      peerStream.fail(asError(e), false)
      return
    }
    Promise.resolve(answer).then(
      (a) => {
        if (peerStream.outDone) return
        if (a === undefined || a === null || a instanceof Uint8Array || a instanceof Readable) {
          peerStream.sendFrom(a ?? undefined)
        } else {
          peerStream.fail(
            new TypeError(`onStream answered with ${describe(a)}, expected a Readable, bytes or nothing`),
            false,
          )
        }
      },
      (e) => peerStream.fail(asError(e), false),
    )
  }

  /** Sends a frame; false when the queue is full (the stream is resumed once it has room). */
  frame(id: number, type: number, bytes: Uint8Array = EMPTY): boolean {
    const st = this.#streams.get(id)
    let r: number
    try {
      r = this.host.send(id, type, bytes)
    } catch (e) {
      if (st !== undefined) st.abort(fromNative(e))
      return false
    }
    if (r !== SEND_QUEUE_FULL) return true
    if (st !== undefined) {
      this.#blocked.add(st)
      this.host.wantDrain()
    }
    return false
  }

  /** The queue has room again. */
  resume(): void {
    const blocked = [...this.#blocked]
    this.#blocked.clear()
    for (const st of blocked) {
      st.grant()
      st.pump()
    }
  }

  /** Forgets a stream once both directions are done. */
  settle(st: StreamState): void {
    if (st.inDone && st.outDone) {
      this.#streams.delete(st.id)
      this.#blocked.delete(st)
    }
  }

  /** Ends every stream with `err` (the peer left, or the channel closed). */
  abortAll(err: Error): void {
    for (const st of [...this.#streams.values()]) st.abort(err)
    this.#streams.clear()
    this.#blocked.clear()
  }
}
