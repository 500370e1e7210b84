/**
 * The event loop's end of this side's loop bell (`crates/sharm-core/src/loop_bell.rs`, Linux): the
 * fd is watched like a socket's, so the peer's ring wakes this thread itself (one wake-up, as for
 * a socket) instead of the wake-up thread, which would then have to wake this one. Each readable
 * turn means "look at the rings"; the bytes mean nothing.
 *
 * @internal
 * @packageDocumentation
 */
import { Socket } from 'node:net'

export class LoopBell {
  readonly #socket: Socket

  /** Watches `fd` (owned from now on) and calls `rung` when it was rung. */
  constructor(fd: number, rung: () => void, log?: (what: string) => void) {
    this.#socket = new Socket({ fd, readable: true, writable: false })
    this.#socket.on('data', rung)
    // A FIFO this process holds both ends of does not fail; if it did, the wake-up thread still
    // notifies of what was not read within its interval (100 ms).
    this.#socket.on('error', (e) => log?.(`loop bell: ${e.message}`))
    // The channel's own reference (`ref()`/`unref()`) keeps the process alive, not the bell.
    this.#socket.unref()
  }

  /** Stops watching and closes the fd. */
  close(): void {
    this.#socket.destroy()
  }
}
