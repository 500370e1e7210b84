// `await using` closes the channel when the block ends, also when it throws. Node 24 and later
// run it as it is (in a .mjs file too); for Node 20 and 22, compile it with TypeScript 5.2 or
// later, or run it with tsx: npx tsx examples/await-using.mts
import { open } from 'sharmipc'

{
  await using a = open('disposal')
  await using b = open('disposal', { onRequest: (data) => Buffer.from(`echo ${data}`) })
  await a.waitForPeer(5000)
  console.log((await a.request(Buffer.from('hi'))).toString()) // echo hi
} // b, then a, closed here
