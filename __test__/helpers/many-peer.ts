// The second process of channels.spec.ts: opens the same `count` channels as the test
// (`<prefix>-0` .. `<prefix>-<count-1>`), answers requests on each, checks the messages each
// carries, and drives traffic on all of them when told to.
// Usage: node --import tsx many-peer.ts <prefix> <count>
import { open, type Channel } from '../../index'
import { channelNames, drive, handlerFor, Receiver, threadCount } from './many'

const [prefix, countArg] = process.argv.slice(2)
const count = Number(countArg)
const reply = (m: unknown) => process.send!(m)

const threadsBefore = threadCount()
const receiver = new Receiver(count)
const errors: string[] = []
const channels: Channel[] = channelNames(prefix, count).map((name, i) => {
  const ch = open(name, { onRequest: handlerFor(i) })
  ch.on('message', receiver.listener(i))
  ch.on('error', (e: Error) => errors.push(`${name}: ${e.message}`))
  return ch
})
const threadsOpen = threadCount()

process.on('message', async (cmd: any) => {
  try {
    switch (cmd.op) {
      case 'drive':
        reply({ driven: await drive(channels, cmd) })
        break
      case 'report':
        reply({ received: receiver.received, bad: receiver.bad, errors })
        break
      case 'close':
        await Promise.all(channels.map((ch) => ch.close()))
        reply({ closed: true, threads: threadCount() })
        process.exit(0)
    }
  } catch (e) {
    reply({ error: String((e as Error).stack ?? e) })
  }
})
process.on('disconnect', () => process.exit(1))

Promise.all(channels.map((ch) => ch.waitForPeer(20_000))).then(
  () => reply({ ready: true, threadsBefore, threadsOpen, capacities: channels.map((ch) => ch.capacity) }),
  (e) => reply({ error: String(e) }),
)
