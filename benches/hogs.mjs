// CPU hogs: processes that each spin on a core, as other work on a busy machine would. The bench
// starts them for its busy rows; the tests of a busy machine start them too.
import { spawn } from 'node:child_process'
import { once } from 'node:events'

/** What the bench's hogs run (`node -e`); its tests find them by this command line. */
export const HOG_PROGRAM = 'for (;;) {}'

/**
 * Starts `n` hogs: `node` (with `prefix` before it, as `['taskset', '-c', '0-1']`) running
 * `program`. Returns a function that kills them and waits until they are gone.
 */
export async function startHogs(n, { prefix = [], program = HOG_PROGRAM } = {}) {
  const [cmd, ...args] = [...prefix, process.execPath, '-e', program]
  const hogs = Array.from({ length: n }, () => spawn(cmd, args, { stdio: 'ignore' }))
  await Promise.all(hogs.map((h) => once(h, 'spawn')))
  return async () => {
    for (const h of hogs) h.kill('SIGKILL')
    await Promise.all(hogs.map((h) => (h.exitCode === null && h.signalCode === null ? once(h, 'exit') : null)))
  }
}
