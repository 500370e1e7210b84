// ES module entry point. It re-exports the CommonJS build rather than being a second build, so
// `import` and `require` in one process share one module: the same classes (`instanceof` works
// across both), one exit hook and one set of open channels.
import sharmipc from './dist/index.js'

export const {
  SharmError,
  TimeoutError,
  PeerGoneError,
  QueueFullError,
  TooLargeError,
  BusyError,
  ProtocolError,
  ClosedError,
  RemoteError,
  AbortError,
  RequestContext,
  Channel,
  open,
  Server,
  serve,
  connect,
} = sharmipc

export default sharmipc
