// How a channel affects its process's lifetime. Usage: node --import tsx lifetime.ts <name> <mode>
// Modes: 'unref' (open, unref, never close), 'close' (open, close), 'ref' (open; close after 300 ms),
// 'exit' (open, then process.exit without closing), 'unref-latency' (open in latency mode, take
// messages for 300 ms, unref, never close).
import { open } from '../../index'

const [name, mode] = process.argv.slice(2)
const ch = open(name, mode === 'unref-latency' ? { latencyMode: true } : {})
const started = Date.now()
process.on('exit', (code) => console.log(`exit ${code} after ${Date.now() - started} ms`))
switch (mode) {
  case 'unref':
    ch.unref()
    break
  case 'unref-latency': {
    // Messages keep coming; a timer holds the process for 300 ms, so polling is under way when
    // nothing else holds it any more.
    let n = 0
    ch.on('message', () => n++)
    ch.unref()
    setTimeout(() => console.log(`got messages: ${n > 0}`), 300)
    break
  }
  case 'close':
    void ch.close()
    break
  case 'ref':
    setTimeout(() => {
      console.log('still alive')
      void ch.close()
    }, 300).unref()
    break
  case 'exit':
    process.exit(0)
}
