/**
 * Native channels and lobby places still open. A process that exits without closing them (its
 * loop ran dry with unref'd channels, or it called process.exit) detaches them on the way out, so
 * the peer sees a clean disconnect, a server sees its client leave, and the last one out still
 * removes the segment.
 *
 * @internal
 * @packageDocumentation
 */
/** A native hold on shared memory: a channel, or a place in a server's lobby. */
interface Native {
  close(): unknown
}

const openNatives = new Map<Native, () => void>()
let installed = false

/** `flush` writes out what the channel accepted but still holds in JS (its send buffer). */
export function trackNative(native: Native, flush: () => void): void {
  openNatives.set(native, flush)
  if (installed) return
  installed = true
  process.on('exit', () => {
    for (const [n, flush] of openNatives) {
      try {
        flush()
      } catch {
        // The channel failed: close() below still detaches it.
      }
      n.close()
    }
    openNatives.clear()
  })
}

/** The channel closed: nothing to do for it at exit. */
export function untrackNative(native: Native): void {
  openNatives.delete(native)
}
