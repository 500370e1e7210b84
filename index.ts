/**
 * sharmipc: inter-process RPC and messaging over shared memory.
 *
 * Two processes on one machine call `open(name)` with the same name and talk: Promise-based
 * requests with timeouts, blocking requests, send-and-forget messages, and answers given later.
 * There is no server and no client: both sides run the same code. For one process serving many,
 * `serve(name)` and `connect(name)` give each client a channel of its own with the server.
 *
 * The code is under `lib/` (see the README's code map); this entry only says what is public.
 *
 * @packageDocumentation
 */
export {
  Channel,
  open,
  type ChannelEvents,
  type ConnectInfo,
  type DisconnectInfo,
  type MessagesOptions,
} from './lib/channel'
export {
  AbortError,
  BusyError,
  ClosedError,
  PeerGoneError,
  ProtocolError,
  QueueFullError,
  RemoteError,
  SharmError,
  TimeoutError,
  TooLargeError,
  type NotDone,
  type Reached,
  type SharmErrorCode,
} from './lib/errors'
export type { Answer, OpenOptions, RequestHandler, RequestOptions } from './lib/options'
export { connect, serve, Server, type ClientInfo, type ServeOptions, type ServerEvents } from './lib/server'
export { RequestContext } from './lib/request-context'
export type { StreamHandler } from './lib/streams'
export type { ChannelStats, DirectionStats } from './lib/internal/stats'
export type { Payload } from './lib/internal/validate'
