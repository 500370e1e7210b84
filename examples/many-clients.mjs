// Many clients, one server: the workers of a node:cluster call one cache process over shared
// memory, each on a channel of its own.
// Run: node examples/many-clients.mjs (it starts the cache process and four workers itself)
import cluster from 'node:cluster'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { connect, serve } from 'sharmipc'

if (process.argv[2] === 'cache') {
  // The one process that holds the cache.
  const cache = new Map()
  const server = serve('cache', {
    maxClients: 64,
    onRequest: (data) => {
      const { op, key, value } = JSON.parse(data)
      if (op === 'set') cache.set(key, value)
      return Buffer.from(JSON.stringify(cache.get(key) ?? null))
    },
  })
  server.on('connection', (_client, { pid }) => console.log(`cache: worker ${pid} connected`))
  server.on('disconnect', (_client, { pid }) => console.log(`cache: worker ${pid} left`))
  process.send('serving')
  await once(process, 'message') // the primary says when to stop
  await server.close()
} else if (cluster.isPrimary) {
  const cacheProcess = fork(fileURLToPath(import.meta.url), ['cache'])
  await once(cacheProcess, 'message')
  const workers = Array.from({ length: 4 }, () => cluster.fork())
  await Promise.all(workers.map((w) => once(w, 'exit')))
  cacheProcess.send('stop')
  await once(cacheProcess, 'exit')
} else {
  // A worker: a client of the cache, with the whole Channel API.
  const cache = connect('cache')
  await cache.waitForPeer(5000)
  const call = async (msg) => JSON.parse(await cache.request(Buffer.from(JSON.stringify(msg))))
  const key = `worker:${process.pid}`
  await call({ op: 'set', key, value: `hello from ${process.pid}` })
  console.log(`worker ${process.pid} read back: ${await call({ op: 'get', key })}`)
  await cache.close()
  process.exit(0)
}
