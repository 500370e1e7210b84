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
import { argType, checkName, describe } from './internal/validate'
import { resolveOptions, type OpenOptions } from './options'

/** Options of {@link serve}: those of every client's channel, and the server's own. */
export interface ServeOptions extends OpenOptions {
  /** The most clients connected at once, 1 to 1024. Default 64. */
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

interface Client {
  channel: Channel
  info: ClientInfo
  ticket: number
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

  /** @internal Use {@link serve}. */
  constructor(name: string, options: ServeOptions = {}) {
    super()
    this.name = checkName(name)
    if (options === null || typeof options !== 'object') {
      throw argType(`options must be an object, got ${describe(options)}`)
    }
    const { maxClients = 64, onMessage, ...channelOptions } = options
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
    const clients = [...this.#clients.values()]
    this.#clients.clear()
    await Promise.all(clients.map((c) => c.channel.close()))
    untrackNative(lobby)
    lobby.close()
    this.emit('close')
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Opens the channels of clients that came, closes those of clients that left or died. */
  #changed = (): void => {
    const lobby = this.#lobby
    if (lobby === null) return
    const places = lobby.clients()
    const here = new Set<string>()
    for (const p of places) {
      if (!p.alive) continue
      here.add(p.channel)
      if (!this.#clients.has(p.channel)) this.#welcome(p.channel, p.index, p.ticket, p.pid)
    }
    for (const [name, c] of this.#clients) {
      if (here.has(name)) continue
      this.#clients.delete(name)
      void this.#farewell(c)
    }
    // Places of clients that died before this server opened their channel.
    for (const p of places) {
      if (p.alive || this.#clients.has(p.channel)) continue
      void this.#removeStale(p.channel, p.index, p.ticket)
    }
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
    // A client's channel failing (a protocol error) is the server's error; the client goes.
    channel.on('error', (e) => this.#emitError(e))
    const info = { pid, place }
    this.#clients.set(name, { channel, info, ticket })
    this.emit('connection', channel, info)
  }

  async #farewell(c: Client): Promise<void> {
    await c.channel.close()
    this.#lobby?.freeDead(c.info.place, c.ticket)
    this.emit('disconnect', c.channel, c.info)
  }

  /** A dead client's channel that no live process holds: opening it takes it over, closing removes it. */
  async #removeStale(name: string, place: number, ticket: number): Promise<void> {
    try {
      await new Channel(name, { ...this.#options, onRequest: undefined, onStream: undefined }).close()
    } catch {
      // Held after all (a client of that name came back): its place says so at the next look.
      return
    }
    this.#lobby?.freeDead(place, ticket)
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
 * {@link Channel} (the whole Channel API). A client started before its server waits for it
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
  let channel: Channel
  try {
    channel = new Channel(lobby.channelName, options)
  } catch (e) {
    lobby.close()
    throw e instanceof SharmError ? e : fromNative(e)
  }
  trackNative(lobby, () => {})
  channel.once('close', () => {
    untrackNative(lobby)
    lobby.close()
  })
  return channel
}
