// Platform guards of the test files. Not in ./index: peer processes import that, and ava may only be
// imported inside an ava worker.
import test from 'ava'

/**
 * `test` where `platforms` holds this platform, else a skipped test whose title says where it runs
 * and why (`test.serial` likewise): for tests that only make sense on some platforms by design.
 */
export function only(platforms: NodeJS.Platform[], why: string): typeof test {
  if (platforms.includes(process.platform)) return test
  const note = ` [skipped: ${platforms.join('/')} only, ${why}]`
  const skip = (title: string, ...rest: any[]) => (test.skip as any)(`${title}${note}`, ...rest)
  return Object.assign(skip, { serial: skip }) as unknown as typeof test
}
