// Turns a bench report (the JSON that benches/run.mjs writes) into text: the terminal table and
// the Markdown table of the README. The chart is benches/chart.mjs.
//
// A row of the report: { id, label, unit, results: { <transport>: { median, runs, detail? } },
// best, ratio, memcpyMBps?, ofMemcpy?, goal?, met? }. The first transport of `results` is
// sharmipc (or sharmipc in latency mode); the others are the baselines.

const MiB = 1 << 20

/** The transports a report can hold, in the order they are shown, with their display names. */
export const TRANSPORTS = {
  sharmipc: 'sharmipc',
  'sharmipc-latency': 'sharmipc, latency mode',
  uds: 'Unix socket',
  ipc: 'child_process IPC',
}

/** The name of each scenario in tables and the chart (also used for reports of earlier versions). */
export const LABELS = {
  'send-1': 'send-and-forget 1 B',
  'send-512': 'send-and-forget 512 B',
  'send-10000': 'send-and-forget 10,000 B',
  'send-1MiB': 'send-and-forget 1 MiB',
  'duplex-send-1': 'send-and-forget 1 B, full duplex',
  'duplex-send-512': 'send-and-forget 512 B, full duplex',
  'duplex-send-10000': 'send-and-forget 10,000 B, full duplex',
  'rpc-1': 'RPC 1 B, 256 in flight',
  'rpc-512': 'RPC 512 B, 256 in flight',
  'rpc-10000': 'RPC 10,000 B, 256 in flight',
  'rpc-1MiB': 'RPC 1 MiB, 4 in flight',
  'duplex-rpc-1': 'RPC 1 B, 256 in flight, full duplex',
  'duplex-rpc-10000': 'RPC 10,000 B, 256 in flight, full duplex',
  'seq-1': 'RPC 1 B, sequential',
  'seq-1-latency': 'RPC 1 B, sequential, latency mode',
  idle: 'idle channel, CPU of both sides',
  'loops-1': 'RPC 1 B, 256 async loops',
  'send-1-busy': 'busy: send-and-forget 1 B',
  'rpc-1-busy': 'busy: RPC 1 B, 256 in flight',
  'loops-1-busy': 'busy: RPC 1 B, 256 async loops',
  'seq-1-busy': 'busy: RPC 1 B, sequential',
  'seq-1-latency-busy': 'busy: RPC 1 B, sequential, latency mode',
  'seq-1-busy-all': 'all cores busy: RPC 1 B, sequential',
  'seq-1-latency-busy-all': 'all cores busy: RPC 1 B, sequential, latency mode',
}

/** The name of a row: its scenario's, or the one the report holds. */
export const labelOf = (r) => LABELS[r.id] ?? r.label

/** Does row `r` belong to a busy machine (the bench ran CPU hogs during it)? */
export const isBusy = (r) => Boolean(r.hogs)

/** Short names of the baselines, for the ratio column. */
const SHORT = { uds: 'socket', ipc: 'IPC' }

/** Three significant digits with a k/M suffix: 13.5 M, 806 k, 3.16 k, 789. */
export function fmt(v) {
  const sig = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2))
  if (v >= 1e6) return `${sig(v / 1e6)} M`
  if (v >= 1e3) return `${sig(v / 1e3)} k`
  if (v >= 100) return v.toFixed(0)
  return v.toFixed(1)
}

/** A ratio: 13.2x, 4.53x, 0.85x. */
export const ratio = (x) => `${x >= 10 ? x.toFixed(1) : x.toFixed(2)}x`

/** Microseconds, for latency percentiles: 3.9, 152, 0.85. */
const micros = (v) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2))

/** The message size of a scenario id: send-1MiB → 1048576, rpc-512 → 512; null when none. */
export function sizeOf(id) {
  const m = /-(\d+)(MiB)?(?:-|$)/.exec(id)
  if (!m) return null
  return Number(m[1]) * (m[2] ? MiB : 1)
}

/** The cells of one row, shared by the terminal and the Markdown table. */
function cells(r) {
  const ids = Object.keys(r.results)
  const ours = ids[0]
  const v = r.results[ours].median
  if (r.unit === '% CPU') {
    const pct = (id) => (r.results[id] ? `${r.results[id].median.toFixed(1)}%` : '')
    return {
      label: labelOf(r),
      ours: `${v.toFixed(1)}% of a core`,
      uds: pct('uds'),
      ipc: pct('ipc'),
      ratio: '',
      rate: '',
    }
  }
  const size = sizeOf(r.id)
  let rate = ''
  if (size !== null && size >= 512 && !/duplex/.test(r.id)) {
    rate = `${((v * size) / 1e9).toFixed(1)} GB/s`
    if (r.ofMemcpy !== undefined) rate += `, ${(r.ofMemcpy * 100).toFixed(0)}% memcpy`
  }
  if (r.ofCeiling !== undefined) rate = `${(r.ofCeiling * 100).toFixed(0)}% of ${fmt(r.ceiling)}`
  // The faster baseline, the ratio's base, is marked with *.
  const base = (id) => (r.results[id] ? `${fmt(r.results[id].median)}${r.best === id ? '*' : ''}` : '')
  return {
    label: labelOf(r),
    ours: `${fmt(v)} ${r.unit}`,
    uds: base('uds'),
    ipc: base('ipc'),
    ratio: r.ratio === undefined ? '' : ratio(r.ratio),
    rate,
  }
}

const COLUMNS = [
  ['label', 'scenario'],
  ['ours', 'sharmipc'],
  ['uds', 'Unix socket'],
  ['ipc', 'child IPC'],
  ['ratio', 'ratio'],
  ['rate', 'payload rate'],
]

/** The project's goals and whether the report meets them, as `scenario: goal: met (figure)`. */
function goalLines(report) {
  return report.rows
    .filter((r) => r.goal)
    .map((r) => {
      const ours = Object.values(r.results)[0]
      let figure = /memcpy/.test(r.goal)
        ? `${(r.ofMemcpy * 100).toFixed(0)}% of memcpy`
        : /half duplex/.test(r.goal)
          ? `${fmt(ours.median)} ${r.unit} per direction`
          : ratio(r.ratio)
      if (r.ofCeiling !== undefined) figure += `, ${(r.ofCeiling * 100).toFixed(0)}% of in-process`
      if (/p99/.test(r.goal)) figure += `, p99 ${micros(ours.detail.p99)} µs vs ${micros(r.results.uds.detail.p99)} µs`
      return `${labelOf(r)}: ${r.goal}: ${r.met ? 'met' : 'NOT met'} (${figure})`
    })
}

/** The notes under a table: what its columns mean, each only when its rows or column show. */
const notes = (all, rows) => NOTES.filter(([shown]) => shown(all, rows)).map(([, text]) => text)

const NOTES = [
  [
    () => true,
    'ratio: sharmipc ÷ the faster baseline of the row (marked *). Full duplex: per direction, mean of the two.',
  ],
  [
    (all, rows) => rows.some(isBusy),
    'busy: the bench runs a CPU hog per core but one (all cores busy: one per core) during those rows.',
  ],
  [
    (all, rows) => all.some((c, i) => c.rate !== '' && rows[i].ceiling === undefined),
    'payload rate: bytes per second one way (RPC: each way); memcpy: one thread copying the same sizes, this run.',
  ],
  [
    (all, rows) => rows.some((r) => r.ceiling !== undefined),
    'async loops: % of the in-process ceiling, the same loops calling an async function that copies the bytes.',
  ],
]

/** The latency rows: per sequential scenario and transport, p50/p99/p99.9 in µs. */
function latencyLines(report) {
  const out = []
  for (const r of report.rows) {
    for (const [id, x] of Object.entries(r.results)) {
      if (x.detail?.p50 === undefined) continue
      out.push([labelOf(r), TRANSPORTS[id] ?? id, micros(x.detail.p50), micros(x.detail.p99), micros(x.detail.p999)])
    }
  }
  return out
}

/** Pads a table of strings into aligned `| a | b |` lines (a Markdown table when `markdown`). */
function grid(head, lines, { markdown = false, right = new Set() } = {}) {
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const pad = (c, i) => (right.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))
  const row = (cs) => `| ${cs.map(pad).join(' | ')} |`
  const rule = markdown
    ? `| ${widths.map((w, i) => (right.has(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`
    : `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`
  return [row(head), rule, ...lines.map(row)]
}

/** Which columns have something to show. */
function usedColumns(all) {
  return COLUMNS.filter(([k], i) => i === 0 || all.some((c) => c[k] !== ''))
}

/**
 * The terminal table, as lines: one table for the rows of a quiet machine, one for the busy rows.
 * Each is at most `width` columns wide (120 unless given); a table that would be wider becomes a
 * block of `name: value` lines per scenario instead.
 */
export function tableLines(report, { goals = false, width = 120 } = {}) {
  const { machine, rows, options } = report
  const all = rows.map(cells)
  const cols = usedColumns(all)
  const out = [
    `${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.os}` +
      (machine.pinned ? `; this process on core ${machine.pinned.bench}, its peer on core ${machine.pinned.peer}` : ''),
    `${options.rounds} round(s) of ${options.ms} ms per transport and scenario, medians; two processes each`,
    ...(options.seqWarmUpMs ? [`sequential rounds after ${options.seqWarmUpMs} ms of warm-up calls`] : []),
    '',
  ]
  const groups = [all.filter((c, i) => !isBusy(rows[i])), all.filter((c, i) => isBusy(rows[i]))].filter(
    (g) => g.length > 0,
  )
  for (const [n, group] of groups.entries()) {
    let table = grid(
      cols.map(([, h]) => h),
      group.map((c) => cols.map(([k]) => c[k])),
    )
    if (table[0].length > width) {
      table = []
      for (const c of group) {
        table.push(c.label)
        for (const [k, h] of cols.slice(1)) if (c[k] !== '') table.push(`  ${h}: ${c[k]}`)
      }
    }
    if (n > 0) out.push('')
    out.push(...table)
  }
  const lat = latencyLines(report)
  if (lat.length > 0) {
    out.push('', 'round-trip latency of sequential RPC, µs')
    out.push(...grid(['scenario', 'transport', 'p50', 'p99', 'p99.9'], lat, { right: new Set([2, 3, 4]) }))
  }
  out.push('', ...notes(all, rows))
  if (goals) out.push('', "the project's goals:", ...goalLines(report).map((l) => `  ${l}`))
  return out
}

/** The Markdown tables of the README: the comparison, then the latency percentiles. */
export function markdownTables(report, { goals = false } = {}) {
  const all = report.rows.map(cells)
  const cols = usedColumns(all).map(([k, h]) => [k, k === 'ipc' ? 'child_process IPC' : h])
  const lines = grid(
    cols.map(([, h]) => h),
    all.map((c) => cols.map(([k]) => c[k].replace(/\*$/, '\\*'))),
    { markdown: true },
  )
  const lat = latencyLines(report)
  if (lat.length > 0) {
    lines.push('', 'Round-trip latency of sequential RPC (µs):', '')
    lines.push(
      ...grid(['scenario', 'transport', 'p50', 'p99', 'p99.9'], lat, { markdown: true, right: new Set([2, 3, 4]) }),
    )
  }
  lines.push('', ...notes(all, report.rows).map((n) => `${n.charAt(0).toUpperCase()}${n.slice(1)}`))
  if (goals) lines.push('', "The project's goals:", '', ...goalLines(report).map((l) => `- ${l}`))
  return lines
}
