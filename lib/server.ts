/**
 * Many clients, one server: {@link serve} and {@link connect}.
 *
 * A server holds the lobby of its name (a small shared-memory segment, `src/lobby.rs`); a client
 * takes a place there and talks to the server over a two-party {@link Channel} of its own, named
 * after its place. So each client has the whole Channel API and its guarantees, and every ring
 * still has one writer and one reader. The server's one lobby thread wakes it when a client comes
 * or goes (or its process died); it then opens or closes that client's channel.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events'

import { Channel } from './channel'
import { fromNative, SharmError } from './errors'
import { native as binding, type NativeLobby } from './internal/binding'
import { trackNative, untrackNative } from './internal/exit-hook'
import { argType, checkInt, checkName, describe } from './internal/validate'
import { resolveOptions, type OpenOptions } from './options'

/** Options of {@link serve}: those of every client's channel, and the server's own. */
export interface ServeOptions extends OpenOptions {
  /** The most clients connected at once, 1 to 1024 (`MAX_CLIENTS` of the native part). Default 64. */
  maxClients?: number
  /** Called with each send-and-forget message of a client, and the client's channel. */
  onMessage?: (data: Buffer, client: Channel) => void
}

/** Who a client is, in the `'connection'` and `'disconnect'` events. */
export interface ClientInfo {
  /** The client's process id. */
  pid: number
  /** Its place in the lobby (places are reused after a client leaves). */
  place: number
}

/** The events of a {@link Server}. */
export interface ServerEvents {
  connection: [client: Channel, info: ClientInfo]
  disconnect: [client: Channel, info: ClientInfo]
  error: [err: Error]
  close: []
}

/**
 * How long a dead client's channel may take to see its departure before it is closed anyway. It
 * sees it by the same liveness test as the lobby's watch, at its next look (100 ms) and its next
 * poll; a busy or loaded process may take seconds to poll (under Wine with the test suite running
 * beside it, more than 1 s). Only a channel that cannot poll (reading paused by a full `messages()`
 * iterator) waits this long.
 */
const DEPARTURE_PATIENCE_MS = 15_000

/**
 * A dead client's channel that could not be taken over (a process this one cannot see die still
 * holds it) is tried again after this long: the lobby's watch says nothing more of a place that
 * does not change.
 */
const STALE_RETRY_MS = 1000

interface Client {
  channel: Channel
  info: ClientInfo
  ticket: number
  /**
   * Its channel emitted `'connect'` and no `'disconnect'` since: the departure is still to be
   * seen. (`channel.connected` reads the native side, which may see a dead peer go before the
   * channel's next poll hands out its `'disconnect'`, which fails its requests with PeerGoneError.)
   */
  attached: boolean
}

/**
 * A server: many clients, each with a {@link Channel} of its own. Made by {@link serve}.
 *
 * Events: `'connection'` `(client, { pid, place })` when a client took a place (its channel is
 * open; requests to it wait for it to attach, as on any channel); `'disconnect'` `(client, info)`
 * when it left or its process died (its channel is closed by then); `'error'`; `'close'`.
 */
export class Server extends EventEmitter<ServerEvents> {
  /** The server's name, as given to {@link serve}. */
  readonly name: string
  #lobby: NativeLobby | null
  #options: OpenOptions
  #onMessage: ServeOptions['onMessage']
  /** By channel name. */
  #clients = new Map<string, Client>()
  /** Channels being closed after their client left or died, and dead clients' channels being removed. */
  #leaving = new Map<string, Promise<unknown>>()
  /** The look again at dead clients' channels that could not be taken over (see {@link STALE_RETRY_MS}). */
  #staleRetry: NodeJS.Timeout | null = null
  /** Channels this side closed (or that failed) whose client still holds its place: not opened again. */
  #dropped = new Set<string>()
  /** Channels of clients that left or died, waiting to see the departure (see {@link DEPARTURE_PATIENCE_MS}). */
  #departing = new Set<Channel>()

  /** @internal Use {@link serve}. */
  constructor(name: string, options: ServeOptions = {}) {
    super()
    this.name = checkName(name)
    if (options === null || typeof options !== 'object') {
      throw argType(`options must be an object, got ${describe(options)}`)
    }
    const { maxClients = 64, onMessage, ...channelOptions } = options
    checkInt(maxClients, 'maxClients', 1, binding.MAX_CLIENTS)
    if (onMessage !== undefined && typeof onMessage !== 'function') {
      throw argType(`onMessage must be a function, got ${describe(onMessage)}`)
    }
    const { mode } = resolveOptions(channelOptions)
    this.#options = channelOptions
    this.#onMessage = onMessage
    try {
      this.#lobby = binding.NativeLobby.serve(this.name, maxClients, mode, this.#changed)
    } catch (e) {
      throw fromNative(e)
    }
    trackNative(this.#lobby, () => {})
    // Clients that waited for a server, or kept their places while none ran.
    queueMicrotask(this.#changed)
  }

  /** The clients' channels, in the order they came. */
  get clients(): Channel[] {
    return [...this.#clients.values()].map((c) => c.channel)
  }

  /** Is the server closed? */
  get closed(): boolean {
    return this.#lobby === null
  }

  /** OS name of the lobby segment (e.g. `/sharm.<name>`). */
  get segmentName(): string {
    return this.#lobby?.segmentName ?? ''
  }

  /** Keep the event loop alive while serving (the default), and for every client's channel. */
  ref(): this {
    this.#lobby?.ref()
    for (const c of this.#clients.values()) c.channel.ref()
    this.#unref = false
    return this
  }

  /** Let the event loop exit although the server and its clients' channels are open. */
  unref(): this {
    this.#lobby?.unref()
    for (const c of this.#clients.values()) c.channel.unref()
    this.#unref = true
    return this
  }

  #unref = false

  /**
   * Closes every client's channel (each as {@link Channel.close} does: what they accepted is
   * written out first) and leaves the lobby; clients see the server leave, and connect again by
   * themselves to the next server of the name.
   */
  async close(): Promise<void> {
    const lobby = this.#lobby
    if (lobby === null) return
    this.#lobby = null
    if (this.#staleRetry !== null) clearTimeout(this.#staleRetry)
    this.#staleRetry = null
    const clients = [...this.#clients.values()]
    this.#clients.clear()
    // Dead clients' channels still waiting to see their departure are closed now too.
    const departing = [...this.#departing]
    await Promise.all([
      ...clients.map((c) => c.channel.close()),
      ...departing.map((ch) => ch.close()),
      ...this.#leaving.values(),
    ])
    untrackNative(lobby)
    lobby.close()
    this.#emitSafely('close')
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Opens the channels of clients that came, closes those of clients that left or died. */
  #changed = (): void => {
    const lobby = this.#lobby
    if (lobby === null) return
    let places: ReturnType<NativeLobby['clients']>
    try {
      places = lobby.clients()
    } catch (e) {
      this.#emitError(fromNative(e))
      return
    }
    const here = new Set(places.filter((p) => p.alive).map((p) => p.channel))
    for (const [name, c] of this.#clients) if (!here.has(name)) this.#farewell(name, c)
    for (const p of places) {
      // A listener may have closed the server meanwhile.
      if (this.#lobby === null) return
      if (this.#clients.has(p.channel) || this.#leaving.has(p.channel) || this.#dropped.has(p.channel)) continue
      if (p.alive) this.#welcome(p.channel, p.index, p.ticket, p.pid)
      else this.#removeStale(p.channel, p.index, p.ticket)
    }
    for (const name of this.#dropped) if (!places.some((p) => p.channel === name)) this.#dropped.delete(name)
  }

  #welcome(name: string, place: number, ticket: number, pid: number): void {
    let channel: Channel
    try {
      // Its wake-up work is done by the server's one thread for all its clients.
      channel = new Channel(name, this.#options, this.#lobby!)
    } catch (e) {
      this.#emitError(e as Error)
      return
    }
    if (this.#unref) channel.unref()
    const onMessage = this.#onMessage
    if (onMessage) channel.on('message', (data) => onMessage(data, channel))
    // A client's channel failing (a protocol error) is the server's error.
    channel.on('error', (e) => this.#emitError(e))
    const info = { pid, place }
    // Closed here (by the user, or failed) while its client keeps its place: that client is
    // disconnected, and its channel is not opened again until the place is taken anew.
    channel.once('close', () => {
      if (this.#clients.get(name)?.channel !== channel) return
      this.#clients.delete(name)
      this.#dropped.add(name)
      this.#emitSafely('disconnect', channel, info)
    })
    const client: Client = { channel, info, ticket, attached: false }
    channel.on('connect', () => (client.attached = true))
    channel.on('disconnect', () => (client.attached = false))
    this.#clients.set(name, client)
    this.#emitSafely('connection', channel, info)
  }

  /** A client left or died: closes its channel, frees its place if it died, says so. */
  #farewell(name: string, c: Client): void {
    this.#clients.delete(name)
    const done = (async () => {
      // A client that died: its channel sees the departure within its next liveness check (100
      // ms), so that requests in flight to it fail with PeerGoneError, not ClosedError.
      if (c.attached || c.channel.connected) {
        this.#departing.add(c.channel)
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer)
            resolve()
          }
          // The channel keeps the event loop alive while it is referenced; the wait does not.
          const timer = setTimeout(done, DEPARTURE_PATIENCE_MS).unref()
          c.channel.once('close', done)
          c.channel.once('disconnect', done)
        })
        this.#departing.delete(c.channel)
      }
      await c.channel.close()
      this.#lobby?.freeDead(c.info.place, c.ticket)
    })()
    this.#leaving.set(name, done)
    void done.finally(() => {
      this.#leaving.delete(name)
      this.#emitSafely('disconnect', c.channel, c.info)
      // Its place may be held by a live process after all (a look that could not tell): the
      // watch thread says nothing more unless something changes, so look again now.
      this.#changed()
    })
  }

  /** A dead client's channel that no live process holds: opening it takes it over, closing removes it. */
  #removeStale(name: string, place: number, ticket: number): void {
    const done = (async () => {
      try {
        await new Channel(name, { ...this.#options, onRequest: undefined, onStream: undefined }).close()
      } catch {
        // Held after all (by a process this one cannot see die): tried again later.
        return false
      }
      this.#lobby?.freeDead(place, ticket)
      return true
    })()
    this.#leaving.set(name, done)
    void done.then((removed) => {
      this.#leaving.delete(name)
      if (!removed && this.#lobby !== null && this.#staleRetry === null) {
        // One look for all of them (each look tries every such place again).
        this.#staleRetry = setTimeout(() => {
          this.#staleRetry = null
          this.#changed()
        }, STALE_RETRY_MS).unref()
      }
    })
  }

  /** Emits `event`; a listener that throws does not stop the server's bookkeeping (it is rethrown on the next tick). */
  #emitSafely<K extends keyof ServerEvents>(event: K, ...args: ServerEvents[K]): void {
    try {
      ;(this.emit as (event: K, ...args: ServerEvents[K]) => boolean)(event, ...args)
    } catch (e) {
      process.nextTick(() => {
        throw e
      })
    }
  }

  #emitError(e: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', e)
    else process.emitWarning(e)
  }
}

/**
 * Serves `name`: clients that {@link connect} to it get a {@link Channel} each, with the
 * server's handlers. `ERR_SHARM_BUSY` if a live process serves that name already.
 */
export function serve(name: string, options?: ServeOptions): Server {
  return new Server(name, options)
}

/**
 * Connects to server `name`: takes a place in its lobby and returns the client's
 * {@link Channel} (the whole Channel API). The channel is created with the lobby's access mode
 * unless `options.mode` says otherwise. A client started before its server waits for it
 * (`waitForPeer`); when the server leaves or dies, its requests fail with `ERR_SHARM_PEER_GONE`
 * and the channel attaches to the next server of the name by itself (`'connect'`).
 * `ERR_SHARM_BUSY` when the server has its `maxClients` clients.
 */
export function connect(name: string, options: OpenOptions = {}): Channel {
  const { mode } = resolveOptions(options)
  let lobby: NativeLobby
  try {
    lobby = binding.NativeLobby.join(checkName(name), mode)
  } catch (e) {
    throw fromNative(e)
  }
  // The client's channel is shared with the server's user as the lobby is, unless asked otherwise.
  const channelMode = options.mode ?? lobby.mode ?? undefined
  let channel: Channel
  try {
    channel = new Channel(lobby.channelName, channelMode === undefined ? options : { ...options, mode: channelMode })
  } catch (e) {
    lobby.close()
    throw e instanceof SharmError ? e : fromNative(e)
  }
  // Only now may the server see this client: it opens the channel this side made.
  lobby.ready()
  trackNative(lobby, () => {})
  channel.once('close', () => {
    untrackNative(lobby)
    lobby.close()
  })
  return channel
}
