// One side for the busy-machine test: opens channel argv[2], waits for a peer, makes 300 sequential
// requests to warm up and then argv[3] more, checks each answer, and closes. Prints "ready", then
// "answered <n>, woken <w> times, found <s> by polling" for the argv[3] requests.
import { open } from '../../index'

async function main(): Promise<void> {
  const ch = open(process.argv[2]!)
  console.log('ready')
  await ch.waitForPeer(30_000)
  const ask = async (n: number) => {
    let answered = 0
    for (let i = 0; i < n; i++) {
      if ((await ch.request(Buffer.from(`q${i}`))).toString() === `q${i}`) answered++
    }
    return answered
  }
  await ask(300)
  const before = ch.stats()
  const answered = await ask(Number(process.argv[3]))
  const after = ch.stats()
  console.log(
    `answered ${answered}, woken ${after.wakeups - before.wakeups} times, found ${after.spinHits - before.spinHits} by polling`,
  )
  await ch.close()
}

void main()
