// Traffic over many channels at once, run by both processes of channels.spec.ts (this module is
// imported by the test and by many-peer.ts). Every message and request carries the index of its
// channel and a sequence number, and its bytes follow from both, so the receiving side can tell a
// message that arrived on the wrong channel, out of order, or damaged.
import { once } from 'node:events'
import { readdirSync } from 'node:fs'

import type { Channel, OpenOptions } from '../../index'

/** Threads of this process (each open channel has one native wake-up thread). */
export function threadCount(): number {
  return readdirSync('/proc/self/task').length
}

/** The names both processes open: `<prefix>-0` .. `<prefix>-<n-1>`. */
export function channelNames(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${i}`)
}

/** The request handler of channel `index`: answers `<index>:` followed by the request. */
export function handlerFor(index: number): NonNullable<OpenOptions['onRequest']> {
  const tag = Buffer.from(`${index}:`)
  return (data) => Buffer.concat([tag, data])
}

/** Size of message `seq`: 8 to 307 bytes, and every 256th one 20,000 bytes (chunked in small rings). */
function sizeOf(seq: number): number {
  return seq % 256 === 255 ? 20_000 : 8 + (seq % 300)
}

/** Message or request `seq` of channel `index`: index, seq, then bytes (index + seq + k) & 255. */
export function payload(index: number, seq: number): Buffer {
  const b = Buffer.allocUnsafe(sizeOf(seq))
  b.writeUInt32LE(index, 0)
  b.writeUInt32LE(seq, 4)
  for (let k = 8; k < b.length; k++) b[k] = (index + seq + k) & 255
  return b
}

/** Checks what arrives on each channel: in order, on the right channel, intact. */
export class Receiver {
  readonly received: number[]
  readonly bad: string[] = []

  constructor(n: number) {
    this.received = new Array(n).fill(0)
  }

  /** The 'message' listener of channel `index`. */
  listener(index: number): (data: Buffer) => void {
    return (data) => {
      const seq = this.received[index]++
      if (this.bad.length < 10 && !data.equals(payload(index, seq))) {
        const got = data.length >= 8 ? `channel ${data.readUInt32LE(0)} seq ${data.readUInt32LE(4)}` : 'a short one'
        this.bad.push(`channel ${index}: message ${seq} (${sizeOf(seq)} B) expected, got ${got} (${data.length} B)`)
      }
    }
  }
}

export interface TrafficResult {
  sent: number
  answered: number
  wrongAnswers: string[]
}

/**
 * On every channel at once: sends `messages` numbered messages (waiting for 'drain' when `send`
 * refuses) and makes `requests` requests, `inflight` at a time per channel, each answer checked
 * against the handler of that channel.
 */
export async function drive(
  channels: Channel[],
  { messages, requests, inflight }: { messages: number; requests: number; inflight: number },
): Promise<TrafficResult> {
  const result: TrafficResult = { sent: 0, answered: 0, wrongAnswers: [] }
  const sender = async (ch: Channel, index: number) => {
    for (let seq = 0; seq < messages; seq++) {
      while (!ch.send(payload(index, seq))) await once(ch, 'drain')
      result.sent++
      if (seq % 64 === 63) await new Promise((r) => setImmediate(r)) // let the other channels go too
    }
  }
  const asker = async (ch: Channel, index: number, lane: number) => {
    for (let seq = lane; seq < requests; seq += inflight) {
      const data = payload(index, seq)
      const answer = await ch.request(data, { timeoutMs: 60_000 })
      const expected = Buffer.concat([Buffer.from(`${index}:`), data])
      if (!answer.equals(expected) && result.wrongAnswers.length < 10) {
        result.wrongAnswers.push(`channel ${index}: request ${seq} got ${answer.subarray(0, 16).toString('hex')}`)
      }
      result.answered++
    }
  }
  await Promise.all(
    channels.flatMap((ch, index) => [
      sender(ch, index),
      ...Array.from({ length: inflight }, (_, lane) => asker(ch, index, lane)),
    ]),
  )
  return result
}
