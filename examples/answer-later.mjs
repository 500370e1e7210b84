// Answering later: the handler keeps the request's id and answers when the work is done.
// Run: node examples/answer-later.mjs (it starts the asking process itself)
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { open } from 'sharmipc'

if (process.argv[2] !== 'asker') {
  const queue = [] // requests not answered yet
  const ch = open('jobs', {
    onRequest: (data, ctx) => {
      ctx.answerLater()
      queue.push({ id: ctx.id, data })
    },
  })
  // ... and some time later:
  const worker = setInterval(() => {
    for (const { id, data } of queue.splice(0)) {
      // ch.answer(id, new Error(...)) rejects the caller's request with a RemoteError
      ch.answer(id, data.toString() === 'fail' ? new Error('failed') : Buffer.from(`result of ${data}`))
    }
  }, 50)
  const asker = fork(fileURLToPath(import.meta.url), ['asker'])
  await once(asker, 'exit')
  clearInterval(worker)
  await ch.close()
} else {
  const ch = open('jobs')
  await ch.waitForPeer(5000)
  console.log((await ch.request(Buffer.from('job 1'))).toString()) // result of job 1
  await ch.request(Buffer.from('fail')).catch((e) => console.log(e.code, e.remoteMessage)) // ERR_SHARM_REMOTE failed
  await ch.close()
}
