// The step lines and closing count of the multi-step test scripts (cross.mjs, node-versions.mjs):
// one line per step with pass or FAIL and its time, and "N passed, N failed" at the end, which
// .ci/run adds to its own count.

/**
 * A tally of steps. `lead(label, step)` is the start of each step line (the columns that name
 * the step); `report` counts a step and prints its line, `finish` prints the count and exits
 * (1 if a step failed).
 */
export function stepTally(lead) {
  let passed = 0
  let failed = 0
  const secs = (t0) => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s`
  return {
    report(label, step, ok, t0, note = '') {
      if (ok) passed++
      else failed++
      console.log(`${lead(label, step)} ${ok ? 'pass' : 'FAIL'} ${secs(t0)}${note ? `  ${note}` : ''}`)
    },
    finish() {
      console.log(`${passed} passed, ${failed} failed`)
      process.exit(failed === 0 ? 0 : 1)
    },
  }
}

/** The last `n` lines of a step's output, for a failed step. */
export const tail = (s, n = 40) => s.trimEnd().split('\n').slice(-n).join('\n')

/**
 * What a failed ava run says of its failures: the lines of the tests marked ✘, then the details
 * ava gives after its first separator (the failed assertion, its values, the stack), at most `n`
 * lines of them; the tail when there is no separator.
 */
export function avaFailures(out, n = 80) {
  const lines = out.trimEnd().split('\n')
  // (× under Windows.)
  const failed = lines.filter((l) => /^[✘×]/.test(l.trimStart()))
  const first = lines.findIndex((l) => l.trim() === '─')
  return [...failed, ...(first >= 0 ? lines.slice(first, first + n) : lines.slice(-n))].join('\n')
}
