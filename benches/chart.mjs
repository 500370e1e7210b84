// Draws a bench report as an SVG bar chart: for each scenario, every transport's figure divided
// by the faster baseline of that scenario (the ratio of the table), on a logarithmic axis that
// starts from 1x. Rows without a ratio (the idle-CPU row: lower is better there) are left out;
// `chart` returns null when no row is left.
import { TRANSPORTS, fmt, labelOf, ratio } from './report.mjs'

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

const COLORS = { sharmipc: '#2b7bb9', 'sharmipc-latency': '#15466e', uds: '#8c8c8c', ipc: '#d4a017' }

/** Rough width of `text` at font size 11 (sans-serif), to keep labels clear of each other. */
const textWidth = (text) => text.length * 6.6

/**
 * @param report the bench report
 * @param options.goals mark the project's goals (a red triangle over sharmipc's bar)
 * @returns the SVG text, or null when the report has no row to chart
 */
export function chart(report, { goals = false } = {}) {
  const rows = report.rows.filter((r) => r.ratio !== undefined && r.results[r.best]?.median > 0)
  if (rows.length === 0) return null
  const left = 330
  const width = 1000
  const plotL = left + 10
  const plotR = width - 110
  const barH = 10
  const slot = 12
  const present = Object.keys(TRANSPORTS).filter((id) => rows.some((r) => r.results[id]))
  const ratios = rows.flatMap((r) =>
    Object.values(r.results)
      .map((x) => x.median / r.results[r.best].median)
      .filter((v) => v > 0),
  )
  const lo = Math.min(0.1, 10 ** Math.floor(Math.log10(Math.min(...ratios)) - 0.3))
  const hi = Math.max(10, 10 ** Math.ceil(Math.log10(Math.max(...ratios)) + 0.15))
  const x = (v) => {
    const c = Math.min(hi, Math.max(lo, v))
    return Math.round((plotL + (Math.log10(c / lo) / Math.log10(hi / lo)) * (plotR - plotL)) * 10) / 10
  }

  const header = 112
  const rowH = (r) => Object.keys(r.results).length * slot + 12
  const plotTop = header
  const plotBottom = plotTop + rows.reduce((n, r) => n + rowH(r), 0)
  const notCharted = report.rows.filter((r) => !rows.includes(r))
  const height = plotBottom + 60 + (notCharted.length > 0 ? 18 : 0)

  const grid = []
  const bars = []
  const labels = []
  const marks = []
  const out = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="24" font-size="15" font-weight="bold">sharmipc and the baselines, each ÷ the faster baseline of its scenario</text>`,
  )
  const m = report.machine
  const o = report.options
  out.push(
    `<text x="12" y="44" fill="#555">${esc(`${m.cpu}, ${m.cores} cores, Node ${m.node}, ${m.os}; ${o.rounds} round(s) of ${o.ms} ms, medians; ${report.date.slice(0, 10)}`)}</text>`,
  )
  // Legend: every transport in the chart.
  let lx = 12
  for (const id of present) {
    out.push(`<rect x="${lx}" y="58" width="12" height="${barH}" fill="${COLORS[id] ?? '#666'}"/>`)
    out.push(`<text x="${lx + 16}" y="67">${esc(TRANSPORTS[id] ?? id)}</text>`)
    lx += 16 + textWidth(TRANSPORTS[id] ?? id) + 18
  }
  if (goals) {
    out.push(`<path d="M${lx} 59L${lx + 10} 59L${lx + 5} 66Z" fill="#c00"/>`)
    out.push(`<text x="${lx + 14}" y="67">goal of the project</text>`)
  }
  // Axis titles: the rows (left), the ratio (below).
  out.push(
    `<text x="${left}" y="${header - 10}" text-anchor="end" font-weight="bold">scenario (sharmipc's figure below it)</text>`,
  )
  out.push(
    `<text x="${(plotL + plotR) / 2}" y="${header - 10}" text-anchor="middle" font-weight="bold">figure ÷ faster baseline (×, log scale; higher is better)</text>`,
  )

  // Grid: one line per power of ten, 1x darker.
  for (let e = Math.round(Math.log10(lo)); e <= Math.round(Math.log10(hi)); e++) {
    const v = 10 ** e
    const gx = x(v)
    grid.push(
      `<line x1="${gx}" y1="${plotTop - 4}" x2="${gx}" y2="${plotBottom}" stroke="${v === 1 ? '#333' : '#ddd'}"/>`,
    )
    grid.push(`<text x="${gx}" y="${plotBottom + 16}" text-anchor="middle">${v >= 1 ? v : v.toFixed(-e)}x</text>`)
  }
  grid.push(`<line x1="${plotL}" y1="${plotBottom}" x2="${plotR}" y2="${plotBottom}" stroke="#333"/>`)
  grid.push(
    `<text x="${(plotL + plotR) / 2}" y="${plotBottom + 36}" text-anchor="middle">throughput relative to the faster of Unix socket and child_process IPC in each scenario (= 1x)</text>`,
  )

  let y = plotTop
  for (const r of rows) {
    const ids = Object.keys(r.results)
    const base = r.results[r.best].median
    const h = rowH(r)
    if (y > plotTop) grid.push(`<line x1="12" y1="${y}" x2="${plotR}" y2="${y}" stroke="#f0f0f0"/>`)
    labels.push(`<text x="${left}" y="${y + h / 2 - 1}" text-anchor="end">${esc(labelOf(r))}</text>`)
    labels.push(
      `<text x="${left}" y="${y + h / 2 + 12}" text-anchor="end" fill="#555">${esc(`${fmt(r.results[ids[0]].median)} ${r.unit}`)}</text>`,
    )
    ids.forEach((id, k) => {
      const v = r.results[id].median / base
      const y0 = y + 6 + k * slot
      const x0 = x(Math.min(1, v))
      const x1 = x(Math.max(1, v))
      bars.push(
        `<rect x="${x0}" y="${y0}" width="${Math.max(3, Math.round((x1 - x0) * 10) / 10)}" height="${barH}" fill="${COLORS[id] ?? '#666'}"><title>${esc(`${TRANSPORTS[id] ?? id}: ${fmt(r.results[id].median)} ${r.unit}, ${ratio(v)}`)}</title></rect>`,
      )
      // The value, beyond the bar's outer end, on a white ground so that no line runs through it.
      const text = ratio(v)
      const w = textWidth(text)
      const tx = v >= 1 ? x1 + 4 : x0 - 4 - w
      labels.push(`<rect x="${tx - 1}" y="${y0 - 1}" width="${w + 2}" height="${barH + 2}" fill="#fff"/>`)
      labels.push(
        `<text x="${tx}" y="${y0 + barH - 1}" textLength="${w}" lengthAdjust="spacingAndGlyphs">${text}</text>`,
      )
      if (goals && k === 0) {
        // The goal: a small red triangle over sharmipc's bar, in the gap above it, drawn last.
        const g = /^≥ ([\d.]+)x/.exec(r.goal ?? '')
        if (g) {
          const gx = x(Number(g[1]))
          marks.push(`<path d="M${gx - 4} ${y0 - 6}L${gx + 4} ${y0 - 6}L${gx} ${y0 - 1}Z" fill="#c00"/>`)
        }
      }
    })
    y += h
  }
  out.push(...grid, ...bars, ...labels, ...marks)
  if (notCharted.length > 0) {
    out.push(
      `<text x="12" y="${height - 10}" fill="#555">${esc(`Not charted (no ratio to draw): ${notCharted.map(labelOf).join('; ')}. See the table.`)}</text>`,
    )
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}
