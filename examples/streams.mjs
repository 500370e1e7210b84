// Streams: a file streamed from one process to the other and back, chunk by chunk.
// Run: node examples/streams.mjs (it starts the second process itself)
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { text } from 'node:stream/consumers'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { open } from 'sharmipc'

if (process.argv[2] !== 'b') {
  const dir = mkdtempSync(path.join(tmpdir(), 'sharmipc-streams-'))
  writeFileSync(path.join(dir, 'big.bin'), randomBytes(8 << 20))

  // Process A: answers a stream request with a stream
  const a = open('files', {
    onStream: async (data, body) => {
      if (data.toString() === 'upload') {
        await pipeline(body, createWriteStream(path.join(dir, 'in.bin'))) // the body the peer streams
        return Buffer.from('stored')
      }
      return createReadStream(data.toString()) // streamed back, chunk by chunk
    },
  })
  const b = fork(fileURLToPath(import.meta.url), ['b', dir])
  await once(b, 'exit')
  await a.close()
  const same = readFileSync(path.join(dir, 'in.bin')).equals(readFileSync(path.join(dir, 'big.bin')))
  console.log(`A: 8 MiB there and back, ${same ? 'unchanged' : 'CHANGED'}`)
  rmSync(dir, { recursive: true })
  if (!same) process.exitCode = 1
} else {
  const dir = process.argv[3]
  const copy = path.join(dir, 'copy.bin')

  // Process B
  const b = open('files')
  await b.waitForPeer(5000)
  const file = b.requestStream(Buffer.from(path.join(dir, 'big.bin'))) // a Readable
  await pipeline(file, createWriteStream(copy))
  const answer = b.requestStream(Buffer.from('upload'), createReadStream(copy))
  console.log('B:', await text(answer)) // stored
  await b.close()
}
