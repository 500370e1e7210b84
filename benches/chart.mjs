// Draws the benchmark table as an SVG bar chart: for each scenario, sharmipc and child_process
// IPC relative to the Unix socket (1x), on a logarithmic axis; goals are marked.

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export function chart(report) {
  // Rows with a ratio to the socket (the idle-CPU row has none: lower is better there).
  const rows = report.rows.filter((r) => r.ratio !== undefined)
  const left = 360
  const width = 980
  const plot = width - left - 90
  const rowH = 34
  const top = 64
  const height = top + rows.length * rowH + 48
  const min = 0.01
  const max = 100
  const x = (v) =>
    Math.round((left + (Math.log10(Math.min(max, Math.max(min, v)) / min) / Math.log10(max / min)) * plot) * 10) / 10
  const out = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
  )
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`)
  out.push(
    `<text x="12" y="22" font-size="15" font-weight="bold">sharmipc vs Unix domain socket (= 1x), higher is better, log scale</text>`,
  )
  const m = report.machine
  out.push(
    `<text x="12" y="42" fill="#555">${esc(`${m.cpu}, ${m.cores} cores, Node ${m.node}; ${report.options.rounds} round(s) of ${report.options.ms} ms, medians; ${report.date.slice(0, 10)}`)}</text>`,
  )
  for (const tick of [0.01, 0.1, 1, 10, 100]) {
    out.push(
      `<line x1="${x(tick)}" y1="${top - 6}" x2="${x(tick)}" y2="${top + rows.length * rowH}" stroke="${tick === 1 ? '#333' : '#ddd'}"/>`,
    )
    out.push(`<text x="${x(tick)}" y="${top + rows.length * rowH + 16}" text-anchor="middle">${tick}x</text>`)
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH
    const ours = Object.keys(r.results)[0]
    const socket = r.results.uds?.median
    out.push(`<text x="${left - 8}" y="${y + 18}" text-anchor="end">${esc(r.label)}</text>`)
    if (!socket) return
    const bars = [
      [ours, '#2b7bb9', r.results[ours].median / socket],
      ['ipc', '#c9a227', (r.results.ipc?.median ?? 0) / socket],
    ]
    bars.forEach(([, color, v], k) => {
      if (!(v > 0)) return
      const y0 = y + 4 + k * 13
      const x0 = x(Math.min(1, v))
      const x1 = x(Math.max(1, v))
      const w = Math.max(1, Math.round((x1 - x0) * 10) / 10)
      out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="11" fill="${color}"/>`)
      if (k === 0) out.push(`<text x="${x(Math.max(1, v)) + 4}" y="${y0 + 10}">${v.toFixed(v >= 10 ? 0 : 1)}x</text>`)
    })
    const goal = /^≥ ([\d.]+)x/.exec(r.goal ?? '')
    if (goal && r.best === 'uds') {
      const gx = x(Number(goal[1]))
      out.push(`<line x1="${gx}" y1="${y + 1}" x2="${gx}" y2="${y + 30}" stroke="#c00" stroke-dasharray="3,2"/>`)
    }
  })
  const ly = height - 14
  out.push(`<rect x="12" y="${ly - 10}" width="12" height="11" fill="#2b7bb9"/><text x="28" y="${ly}">sharmipc</text>`)
  out.push(
    `<rect x="100" y="${ly - 10}" width="12" height="11" fill="#c9a227"/><text x="116" y="${ly}">child_process IPC</text>`,
  )
  out.push(
    `<line x1="250" y1="${ly - 10}" x2="250" y2="${ly + 1}" stroke="#c00" stroke-dasharray="3,2"/><text x="256" y="${ly}">goal</text>`,
  )
  out.push('</svg>')
  return out.join('\n') + '\n'
}
