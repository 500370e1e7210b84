/**
 * The counters behind `Channel.stats()`: plain fields, bumped where things happen, read together
 * by {@link Counters.snapshot}.
 *
 * @internal
 * @packageDocumentation
 */

/** Counts in one direction, see `Channel.stats()`. */
export interface DirectionStats {
  /** Send-and-forget messages. */
  messages: number
  requests: number
  /** Answers, error answers included. */
  answers: number
  /** Frames of streams (chunks, ends, credits, ...). */
  streamFrames: number
  /** Payload bytes of all of them. */
  bytes: number
}

/** What `Channel.stats()` returns. */
export interface ChannelStats {
  sent: DirectionStats
  received: DirectionStats
  pendingRequests: number
  timeouts: number
  queueFullRejections: number
  errors: number
  remoteErrors: number
  wakeups: number
  spinHits: number
  batches: number
  largestBatch: number
  queuedBytes: number
}

export class Counters {
  sentMessages = 0
  sentRequests = 0
  sentAnswers = 0
  sentStreamFrames = 0
  sentBytes = 0
  receivedMessages = 0
  receivedRequests = 0
  receivedAnswers = 0
  receivedStreamFrames = 0
  receivedBytes = 0
  remoteErrors = 0
  timeouts = 0
  queueFullRejections = 0
  errors = 0
  wakeups = 0
  spinHits = 0
  batches = 0
  largestBatch = 0

  snapshot(pendingRequests: number, queuedBytes: number): ChannelStats {
    return {
      sent: {
        messages: this.sentMessages,
        requests: this.sentRequests,
        answers: this.sentAnswers,
        streamFrames: this.sentStreamFrames,
        bytes: this.sentBytes,
      },
      received: {
        messages: this.receivedMessages,
        requests: this.receivedRequests,
        answers: this.receivedAnswers,
        streamFrames: this.receivedStreamFrames,
        bytes: this.receivedBytes,
      },
      pendingRequests,
      timeouts: this.timeouts,
      queueFullRejections: this.queueFullRejections,
      errors: this.errors,
      remoteErrors: this.remoteErrors,
      wakeups: this.wakeups,
      spinHits: this.spinHits,
      batches: this.batches,
      largestBatch: this.largestBatch,
      queuedBytes,
    }
  }
}
