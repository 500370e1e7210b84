// One side for the NODE_DEBUG=sharmipc test: opens channel argv[2] with a small queue, and once
// a peer attached fills the queue, waits for 'drain', makes a request, and then waits for the
// peer to leave before it closes. Prints "ready" and "done" on stdout.
import { once } from 'node:events'

import { open } from '../../index'

async function main(): Promise<void> {
  const ch = open(process.argv[2]!, { capacity: 4096, maxQueueBytes: 4096 })
  console.log('ready')
  await once(ch, 'connect')
  const msg = Buffer.alloc(256)
  while (ch.send(msg)) {}
  await once(ch, 'drain')
  await ch.request('ping')
  console.log('done')
  await once(ch, 'disconnect')
  await ch.close()
}

void main()
