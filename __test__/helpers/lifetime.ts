// How a channel affects its process's lifetime. Usage: node --import tsx lifetime.ts <name> <mode>
// Modes: 'unref' (open, unref, never close), 'close' (open, close), 'ref' (open; close after 300 ms),
// 'exit' (open, then process.exit without closing).
import { open } from '../../index'

const [name, mode] = process.argv.slice(2)
const ch = open(name)
const started = Date.now()
process.on('exit', (code) => console.log(`exit ${code} after ${Date.now() - started} ms`))
switch (mode) {
  case 'unref':
    ch.unref()
    break
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
