// sharmipc/compat: the classes of the .NET SharmIPC, [ok, data] results that never throw.
// Run: node examples/compat.mjs (it starts the second process itself)
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { SharmIpc } from 'sharmipc/compat' // or: const { SharmIpc } = require('sharmipc/compat')

if (process.argv[2] !== 'b') {
  // The AsyncRemoteCallHandler form (two parameters, or handlerForm: 'answerLater'): answer later.
  const later = new SharmIpc('compat-orders', (msgId, data) => {
    if (msgId === 0) return console.log('A: message', data.toString()) // msgId 0: a send-and-forget message
    setTimeout(() => later.asyncAnswerOnRemoteCall(msgId, [true, Buffer.from(`later: ${data}`)]), 10)
  })
  const b = fork(fileURLToPath(import.meta.url), ['b'])
  await once(b, 'exit')
  await later.dispose()
} else {
  // The original's RemoteCall form: return [ok, data] (or a Promise of it).
  const sm = new SharmIpc('compat-orders', (data) => [true, Buffer.from('got it')])
  await sm.channel.waitForPeer(5000)
  const [ok, answer] = sm.remoteRequest(Buffer.from('hello'), 5000) // blocking; [false, null] on failure
  console.log('B:', ok, answer?.toString())
  const [ok2, answer2, why] = await sm.remoteRequestAsync(Buffer.from('hello')) // why: the error if !ok2
  console.log('B:', ok2, ok2 ? answer2.toString() : why)
  sm.remoteRequestWithoutResponse(Buffer.from('note')) // true when accepted
  console.log(sm.usageReport()) // plain text, from ch.stats()
  await sm.dispose()
}
