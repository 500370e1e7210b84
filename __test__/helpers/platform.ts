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

/**
 * The emulator the suite runs under (`SHARMIPC_TEST_EMULATED`, set by `scripts/cross.mjs`: `qemu-user`),
 * or `''` natively. Emulated, a process runs 10–20 times slower and a Node start takes seconds.
 */
export const emulator = process.env.SHARMIPC_TEST_EMULATED ?? ''

/**
 * How many times a test repeats its work: `native`, or `emulated` under an emulator. Only for
 * tests whose checks are the same in every round (the rounds find rare interleavings); what each
 * round checks is unchanged.
 */
export function rounds(native: number, emulated: number): number {
  return emulator === '' ? native : emulated
}

/** A test's own time limit in ms, ten times longer under an emulator. */
export function patience(ms: number): number {
  return emulator === '' ? ms : ms * 10
}
