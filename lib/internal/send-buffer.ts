/**
 * The way out: every message, request, answer and stream frame goes through {@link SendBuffer}.
 * Small messages are encoded in the ring's record format (the binding's `RECORD_*` constants)
 * into a send buffer that goes to the native side once per tick, in one call (`sendStaged`), or
 * sooner when full; larger ones go straight to the native side (`send`), after what is in the
 * send buffer. The queue limit (`maxQueueBytes`) counts what waits here and natively.
 *
 * @internal
 * @packageDocumentation
 */
import { fromNative } from '../errors'
import { native as binding, type NativeChannel } from './binding'
import type { Counters } from './stats'
import { EMPTY } from './validate'

// Module-level copies: read on every message.
const { KIND_CANCEL, KIND_MESSAGE, KIND_REQUEST, KIND_STREAM, RECORD_ALIGN, RECORD_HEADER_BYTES, SEND_QUEUE_FULL } =
  binding

/** Small messages are encoded into a send buffer of this size and go to the ring in batches. */
const STAGE_BYTES = 64 * 1024
/** Larger messages go straight to the native side (after what is in the send buffer). */
const STAGE_MAX_MESSAGE = 4096

/** What the send buffer needs from its channel. */
export interface SendHost {
  /** The native channel, `null` once closed. */
  native(): NativeChannel | null
  /** Bytes wait natively for ring space, which the peer frees soon: poll for it. */
  waiting(): void
  /** Writing failed (a broken channel): fail the channel. */
  fail(err: Error): void
}

export class SendBuffer {
  readonly #host: SendHost
  readonly #stats: Counters
  readonly #maxQueueBytes: number
  readonly #maxMessageBytes: number
  #stage = Buffer.allocUnsafeSlow(STAGE_BYTES)
  #stage32 = new Uint32Array(this.#stage.buffer, this.#stage.byteOffset, STAGE_BYTES / 4)
  #stageLen = 0
  /** Payload bytes in the send buffer. */
  #stagedBytes = 0
  #flushScheduled = false
  /** Bytes in the native queue as of the last native call (only native calls change it). */
  nativeQueued = 0

  constructor(host: SendHost, stats: Counters, maxQueueBytes: number, maxMessageBytes: number) {
    this.#host = host
    this.#stats = stats
    this.#maxQueueBytes = maxQueueBytes
    this.#maxMessageBytes = maxMessageBytes
  }

  /** Payload bytes accepted here and not yet handed to the native side. */
  get stagedBytes(): number {
    return this.#stagedBytes
  }

  /**
   * Sends one message, with the contract of the native `send`: `SEND_QUEUE_FULL` when the queue
   * is over `maxQueueBytes` (nothing taken), another result when taken; throws native errors.
   */
  submit(native: NativeChannel, kind: number, id: number, gen: number, bytes: Uint8Array): number {
    const r = this.#submitOne(native, kind, id, gen, bytes, true)
    const s = this.#stats
    if (r === SEND_QUEUE_FULL) s.queueFullRejections++
    else {
      if (kind === KIND_MESSAGE) s.sentMessages++
      else if (kind === KIND_STREAM) s.sentStreamFrames++
      else if (kind === KIND_REQUEST) s.sentRequests++
      else s.sentAnswers++
      s.sentBytes += bytes.length
    }
    return r
  }

  /**
   * Gives up on request `id` of ours: takes it out of the native queue if none of it went out
   * (after handing over the send buffer, which may hold it), or else sends a cancel record, which
   * the queue takes whatever it holds (a header of 16 bytes, one per request at most).
   */
  withdraw(native: NativeChannel, id: number): void {
    if (!this.flushOrFail() || native.cancel(id)) return
    this.#submitOne(native, KIND_CANCEL, id, 0, EMPTY, false)
  }

  /** `limit`: refuse (`SEND_QUEUE_FULL`) when the queue is over `maxQueueBytes`. */
  #submitOne(native: NativeChannel, kind: number, id: number, gen: number, bytes: Uint8Array, limit: boolean): number {
    const len = bytes.length
    if (len > STAGE_MAX_MESSAGE || len > this.#maxMessageBytes) {
      this.flush()
      const r = native.send(kind, id, gen, bytes)
      this.nativeQueued = native.queuedBytes
      if (this.nativeQueued > 0) this.#host.waiting()
      return r
    }
    // An empty queue takes any message.
    let queued = this.nativeQueued + this.#stagedBytes
    if (limit && queued > 0 && queued + len > this.#maxQueueBytes) {
      if (this.#stagedBytes === 0) return SEND_QUEUE_FULL
      this.flush() // what is staged may fit the ring: look again with the native count
      queued = this.nativeQueued
      if (queued > 0 && queued + len > this.#maxQueueBytes) return SEND_QUEUE_FULL
    }
    const need = RECORD_HEADER_BYTES + ((len + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1))
    if (this.#stageLen + need > STAGE_BYTES) this.flush()
    const o = this.#stageLen
    // The record header: payload length, kind (flags 0) | gen << 16, id low and high (u32 LE).
    const w = o >>> 2
    const s32 = this.#stage32
    s32[w] = len
    s32[w + 1] = kind | (gen << 16)
    s32[w + 2] = id >>> 0
    s32[w + 3] = (id / 0x1_0000_0000) >>> 0
    const stage = this.#stage
    const body = o + RECORD_HEADER_BYTES
    if (len <= 16) for (let i = 0; i < len; i++) stage[body + i] = bytes[i]
    else stage.set(bytes, body)
    this.#stageLen = o + need
    this.#stagedBytes += len
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      process.nextTick(this.#flushTick)
    }
    return 0
  }

  /** Writes the send buffer to the ring (what does not fit goes to the native queue). Throws native errors. */
  flush(): void {
    const len = this.#stageLen
    if (len === 0) return
    this.#stageLen = 0
    this.#stagedBytes = 0
    const native = this.#host.native()
    if (native === null) return
    this.nativeQueued = native.sendStaged(this.#stage, len)
    if (this.nativeQueued > 0) this.#host.waiting()
  }

  /** Flushes; on failure (a broken channel) fails the channel and says false. */
  flushOrFail(): boolean {
    try {
      this.flush()
      return true
    } catch (e) {
      this.#host.fail(fromNative(e))
      return false
    }
  }

  /** Drops what is staged (the channel failed). */
  discard(): void {
    this.#stageLen = 0
    this.#stagedBytes = 0
  }

  #flushTick = (): void => {
    this.#flushScheduled = false
    this.flushOrFail()
  }
}
