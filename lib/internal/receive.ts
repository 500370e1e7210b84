/**
 * The way in: {@link Receiver.drain} reads what arrived (`pollInto`, into a reused meta array
 * and arena, so a small message costs no allocation), applies the peer's comings and goings in
 * order, and hands each message to its place by kind: send-and-forget to `'message'`, requests
 * to the handler, answers to the pending requests, stream frames to the streams.
 *
 * @internal
 * @packageDocumentation
 */
import { fromNative } from '../errors'
import { native as binding, type NativeChannel, type PeerChange } from './binding'
import type { SendBuffer } from './send-buffer'
import type { Counters } from './stats'

// Module-level copies: read on every message.
const {
  KIND_CANCEL,
  KIND_MESSAGE,
  KIND_REQUEST,
  KIND_RESPONSE,
  KIND_ERROR_RESPONSE,
  KIND_STREAM,
  POLL_META_HEAD,
  POLL_LARGE,
  POLL_INLINE_MAX,
  POLL_WORD_EVENTS,
  POLL_WORD_MORE,
  POLL_WORD_ARENA_END,
  POLL_WORD_QUEUED,
} = binding

/**
 * A large payload's memory was allocated natively: V8 frees it when the payload's `Buffer` is
 * collected, but counts it only as external memory, which it reclaims with full collections (on
 * a busy 1 MiB channel here, one every 50 ms, with marking threads that compete for the cores).
 * An allocation through V8's own array-buffer allocator looks at the external memory held by young
 * objects and, past twice the young generation's size, first runs a young collection, which
 * frees the payloads that died young at a fraction of the cost. One byte per large payload is
 * that allocation.
 */
function youngBytesHint(): void {
  lastHint = new ArrayBuffer(1)
}
let lastHint: ArrayBuffer | null = null

/** Rounds of polling one wake-up may take before it yields to the event loop. */
const DRAIN_ROUNDS = 16
/** Messages one pollInto may deliver. */
const META_MESSAGES = 8192
/** Incoming payloads are copied into arenas of this size; a message is a view into one. */
const ARENA_BYTES = 256 * 1024
/** While answering a batch of requests, the answers go out every this many. */
const ANSWER_FLUSH_EVERY = 32

/** Where the receiver hands what it read. */
export interface ReceiveHost {
  /** The native channel, `null` once closed. */
  native(): NativeChannel | null
  /** Reading failed (a protocol error, a broken channel): fail the channel. */
  fail(err: Error): void
  /** Reading is stopped (a `messages()` iterator is full): leave the ring as it is. */
  paused(): boolean
  /** Something arrived: keep polling for a while. */
  heat(): void
  /** Runs `fn` in the next turn of the event loop. */
  later(fn: () => void): void
  /** A peer attached. */
  connected(change: PeerChange): void
  /** The peer left, with what it did not get. */
  disconnected(change: PeerChange): void
  message(payload: Buffer): void
  streamFrame(id: number, type: number, payload: Buffer): void
  /** A request of the peer's: `gen` is to be echoed in the answer. */
  request(id: number, gen: number, payload: Buffer): void
  /** The peer gave up on its request `id` of generation `gen`. */
  cancel(id: number, gen: number): void
  /** An answer to request `id` of ours; says whether it settled one (false: late or unknown). */
  answer(id: number, ok: boolean, payload: Buffer): boolean
  /** A drain ended: the queues may have room again. */
  drained(): void
}

export class Receiver {
  readonly #host: ReceiveHost
  readonly #send: SendBuffer
  readonly #stats: Counters
  #meta = new Uint32Array(POLL_META_HEAD + 4 * META_MESSAGES)
  #arena: Buffer = Buffer.allocUnsafeSlow(0)
  /** The arena's memory (read once: `arena.buffer` costs a lookup each time). */
  #arenaMemory: ArrayBuffer = this.#arena.buffer as ArrayBuffer
  #arenaUsed = 0

  constructor(host: ReceiveHost, send: SendBuffer, stats: Counters) {
    this.#host = host
    this.#send = send
    this.#stats = stats
  }

  /** Takes everything that arrived (called on a wake-up, by polling, and after requestSync). */
  drain = (): void => {
    const host = this.#host
    if (!this.#send.flushOrFail()) return
    let delivered = 0
    // More is waiting (data, or peer events due): if the rounds run out, drain again next turn.
    // Nothing else would: a departure due once its peer's last records are read has no new data
    // behind it to wake this side.
    let more = false
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      const native = host.native()
      if (native === null || host.paused()) break
      const meta = this.#meta
      if (this.#arena.length - this.#arenaUsed < POLL_INLINE_MAX) {
        this.#arena = Buffer.allocUnsafeSlow(ARENA_BYTES)
        this.#arenaMemory = this.#arena.buffer as ArrayBuffer
        this.#arenaUsed = 0
      }
      const arena = this.#arena
      const start = this.#arenaUsed
      let count: number
      try {
        count = native.pollInto(meta, arena, start)
      } catch (e) {
        host.fail(fromNative(e))
        return
      }
      this.#arenaUsed = meta[POLL_WORD_ARENA_END]
      this.#send.nativeQueued = meta[POLL_WORD_QUEUED] + meta[POLL_WORD_QUEUED + 1] * 0x1_0000_0000
      more = meta[POLL_WORD_MORE] !== 0
      // The peer's comings and goings, in order, before this poll's messages (the native side
      // hands a departure out only after everything that peer wrote, so its last answers
      // resolve their requests first).
      if (meta[POLL_WORD_EVENTS] > 0) {
        for (const change of native.takeEvents()) {
          if (change.joined) host.connected(change)
          else host.disconnected(change)
        }
      }
      let settled = 0
      delivered = count
      if (count > 0) {
        this.#stats.batches++
        if (count > this.#stats.largestBatch) this.#stats.largestBatch = count
        host.heat()
        settled = this.#deliver(meta, count, this.#arenaMemory, arena.byteOffset + start)
      }
      if (!more) break
      if (settled > 0) {
        // Let the code waiting for these answers run (and send) before reading on.
        break
      }
    }
    if (more) host.later(this.drain)
    // Everything handed out was delivered: the peer may count it so and reuse the space now
    // rather than at the next poll.
    if (delivered > 0) host.native()?.delivered()
    host.drained()
  }

  /**
   * Delivers `count` messages described in `meta` (after its head) whose payloads lie in `memory`
   * from `offset` on. (Handlers never poll synchronously, so `meta` stays as it is meanwhile.)
   * Returns how many requests of ours it settled.
   */
  #deliver(meta: Uint32Array, count: number, memory: ArrayBuffer, offset: number): number {
    const host = this.#host
    const stats = this.#stats
    const m = meta
    const stop = POLL_META_HEAD + count * 4
    let settled = 0
    let handled = 0
    for (let i = POLL_META_HEAD; i < stop; i += 4) {
      const kind = m[i] & 0xff
      const gen = m[i] >>> 16
      const id = m[i + 1] + m[i + 2] * 0x1_0000_0000
      const len = m[i + 3]
      let payload: Buffer
      if (len === POLL_LARGE) {
        const native = host.native()
        if (native === null) return settled // a handler closed the channel
        payload = native.takeLarge()
        youngBytesHint()
      } else {
        payload = Buffer.from(memory, offset, len)
        offset += len
      }
      stats.receivedBytes += payload.length
      switch (kind) {
        case KIND_MESSAGE:
          stats.receivedMessages++
          host.message(payload)
          break
        case KIND_STREAM:
          stats.receivedStreamFrames++
          host.streamFrame(id, gen, payload)
          break
        case KIND_REQUEST:
          stats.receivedRequests++
          host.request(id, gen, payload)
          // Stream the answers: the asker can go on with the first ones meanwhile.
          if (++handled % ANSWER_FLUSH_EVERY === 0 && !this.#send.flushOrFail()) return settled
          break
        case KIND_CANCEL:
          host.cancel(id, gen)
          break
        case KIND_RESPONSE:
        case KIND_ERROR_RESPONSE:
          stats.receivedAnswers++
          if (kind === KIND_ERROR_RESPONSE) stats.remoteErrors++
          if (host.answer(id, kind === KIND_RESPONSE, payload)) settled++
          break
      }
    }
    return settled
  }
}
