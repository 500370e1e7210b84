#!/usr/bin/env node
// sharmipc command line: `sharmipc bench [options]` runs the side-by-side benchmarks.
import { main } from '../benches/run.mjs'

const [command, ...rest] = process.argv.slice(2)
const usage = `usage: sharmipc bench [--quick] [--rounds N] [--ms N] [--only ID[,ID...]] [--out DIR] [--svg FILE] [--replot JSON]`

if (command === 'bench') {
  main(rest).catch((e) => {
    console.error(`\nbench failed: ${e?.stack ?? e}`)
    process.exit(1)
  })
} else if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
  console.log(usage)
  if (command === undefined) process.exitCode = 2
} else {
  console.error(`unknown command ${JSON.stringify(command)}; expected "bench"\n${usage}`)
  process.exit(2)
}
