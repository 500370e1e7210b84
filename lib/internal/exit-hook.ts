/**
 * Native channels still open. A process that exits without closing them (its loop ran dry with
 * unref'd channels, or it called process.exit) detaches them on the way out, so the peer sees a
 * clean disconnect and the last side out still removes the segment.
 *
 * @internal
 * @packageDocumentation
 */
import type { NativeChannel } from './binding'

const openNatives = new Map<NativeChannel, () => void>()
let installed = false

/** `flush` writes out what the channel accepted but still holds in JS (its send buffer). */
export function trackNative(native: NativeChannel, flush: () => void): void {
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
export function untrackNative(native: NativeChannel): void {
  openNatives.delete(native)
}
