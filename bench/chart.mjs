/**
 * The chart of docs/performance.md, drawn as SVG text: cost per access (median ns, log scale)
 * by transfer size (8 B … 64 KiB, log scale) and barrier strength, reads and writes side by
 * side. Solid lines are the `tso` policy, dashed lines `strict`. No browser, no library.
 */

const COLORS = {
  raw: '#555555',
  relaxed: '#1f77b4',
  acquire: '#2ca02c',
  release: '#ff7f0e',
  full: '#d62728',
};

const PANEL_WIDTH = 400;
const PANEL_HEIGHT = 300;
const MARGIN = { top: 56, right: 24, bottom: 88, left: 72 };
const GAP = 40;

function escape(text) {
  return String(text)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
}

function sizeLabel(size) {
  return size >= 1024 ? `${size / 1024} KiB` : `${size} B`;
}

function nsLabel(ns) {
  if (ns >= 1e6) return `${ns / 1e6} ms`;
  if (ns >= 1e3) return `${ns / 1e3} µs`;
  return `${ns} ns`;
}

/**
 * The series of one panel: for each strength (and policy), the median cost at each size.
 *
 * @param {Array<object>} micro the micro results.
 * @param {'read' | 'write'} op
 */
export function chartSeries(micro, op) {
  const transfer = micro.filter((result) => result.group === 'transfer' && result.op === op);
  const sizes = [...new Set(transfer.map((result) => result.size))].sort((a, b) => a - b);
  const ordered = op === 'read' ? 'acquire' : 'release';
  const wanted = [
    ['raw', 'tso', 'raw (best hand-written)'],
    ['relaxed', 'tso', 'relaxed'],
    [ordered, 'tso', `${ordered} (tso)`],
    [ordered, 'strict', `${ordered} (strict)`],
    ['full', 'tso', 'full (tso)'],
    ['full', 'strict', 'full (strict)'],
  ];
  const series = [];
  for (const [strength, policy, label] of wanted) {
    const points = [];
    for (const size of sizes) {
      const candidates = transfer.filter(
        (result) =>
          result.size === size &&
          result.strength === strength &&
          (strength === 'raw' || result.policy === policy),
      );
      if (candidates.length === 0) continue;
      points.push({ size, ns: Math.min(...candidates.map((result) => result.p50)) });
    }
    if (points.length > 0) series.push({ strength, policy, label, points });
  }
  return { sizes, series };
}

/**
 * Renders the chart.
 *
 * @param {Array<object>} micro the micro results.
 * @param {{ cpu: string, node: string, loadavg: number[] }} host
 * @returns {string} a standalone SVG document.
 */
export function renderChart(micro, host) {
  const panels = ['read', 'write'].map((op) => ({ op, ...chartSeries(micro, op) }));
  const all = panels.flatMap((panel) => panel.series.flatMap((s) => s.points.map((p) => p.ns)));
  const sizes = [...new Set(panels.flatMap((panel) => panel.sizes))].sort((a, b) => a - b);
  const low = 10 ** Math.floor(Math.log10(Math.max(Math.min(...all, 1e9), 0.01)));
  const high = 10 ** Math.ceil(Math.log10(Math.max(...all, 1)));
  const minLog = Math.log2(sizes[0] ?? 8);
  const maxLog = Math.log2(sizes[sizes.length - 1] ?? 65536);
  const width = MARGIN.left + 2 * PANEL_WIDTH + GAP + MARGIN.right;
  const height = MARGIN.top + PANEL_HEIGHT + MARGIN.bottom;

  const y = (ns) =>
    MARGIN.top +
    PANEL_HEIGHT -
    ((Math.log10(ns) - Math.log10(low)) / (Math.log10(high) - Math.log10(low))) * PANEL_HEIGHT;
  const x = (origin, size) =>
    origin +
    12 +
    (maxLog === minLog ? 0 : ((Math.log2(size) - minLog) / (maxLog - minLog)) * (PANEL_WIDTH - 24));

  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
  );
  out.push(
    '<title>dma-attrs: cost per access by size and barrier strength (median ns, log scale)</title>',
  );
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<text x="${MARGIN.left}" y="22" font-size="15" font-weight="bold">Cost per access (median, ns, log scale) by size and strength</text>`,
  );
  out.push(
    `<text x="${MARGIN.left}" y="40" fill="#555555">${escape(`${host.cpu}, Node ${host.node}, load ${host.loadavg.map((load) => load.toFixed(2)).join(' ')}; solid: tso, dashed: strict`)}</text>`,
  );

  panels.forEach((panel, index) => {
    const origin = MARGIN.left + index * (PANEL_WIDTH + GAP);
    out.push(`<g class="panel" data-op="${panel.op}">`);
    out.push(
      `<rect x="${origin}" y="${MARGIN.top}" width="${PANEL_WIDTH}" height="${PANEL_HEIGHT}" fill="none" stroke="#999999"/>`,
    );
    out.push(
      `<text x="${origin + PANEL_WIDTH / 2}" y="${MARGIN.top - 4}" text-anchor="middle" font-weight="bold">${panel.op === 'read' ? 'ctx.read (device reads guest memory)' : 'ctx.write (device writes guest memory)'}</text>`,
    );
    for (let decade = low; decade <= high * 1.0001; decade *= 10) {
      const gy = y(decade).toFixed(1);
      out.push(
        `<line x1="${origin}" x2="${origin + PANEL_WIDTH}" y1="${gy}" y2="${gy}" stroke="#e0e0e0"/>`,
      );
      if (index === 0) {
        out.push(
          `<text x="${origin - 6}" y="${gy}" dy="4" text-anchor="end">${escape(nsLabel(Number(decade.toPrecision(1))))}</text>`,
        );
      }
    }
    for (const size of panel.sizes) {
      const gx = x(origin, size).toFixed(1);
      out.push(
        `<line x1="${gx}" x2="${gx}" y1="${MARGIN.top}" y2="${MARGIN.top + PANEL_HEIGHT}" stroke="#f0f0f0"/>`,
      );
      out.push(
        `<text x="${gx}" y="${MARGIN.top + PANEL_HEIGHT + 16}" text-anchor="middle">${sizeLabel(size)}</text>`,
      );
    }
    out.push(
      `<text x="${origin + PANEL_WIDTH / 2}" y="${MARGIN.top + PANEL_HEIGHT + 34}" text-anchor="middle" fill="#555555">transfer size</text>`,
    );
    for (const series of panel.series) {
      const color = COLORS[series.strength] ?? '#000000';
      const dash =
        series.policy === 'strict' && series.strength !== 'raw' && series.strength !== 'relaxed';
      const path = series.points
        .map(
          (point, at) =>
            `${at === 0 ? 'M' : 'L'}${x(origin, point.size).toFixed(1)},${y(point.ns).toFixed(1)}`,
        )
        .join(' ');
      out.push(
        `<g class="series" data-series="${escape(series.label)}"><title>${escape(`${panel.op}: ${series.label}`)}</title>`,
      );
      out.push(
        `<path d="${path}" fill="none" stroke="${color}" stroke-width="2"${dash ? ' stroke-dasharray="6 4"' : ''}/>`,
      );
      for (const point of series.points) {
        out.push(
          `<circle cx="${x(origin, point.size).toFixed(1)}" cy="${y(point.ns).toFixed(1)}" r="3" fill="${color}"><title>${escape(`${panel.op} ${sizeLabel(point.size)}, ${series.label}: ${point.ns.toFixed(2)} ns`)}</title></circle>`,
        );
      }
      out.push('</g>');
    }
    out.push('</g>');
  });

  out.push(
    `<text transform="translate(16 ${MARGIN.top + PANEL_HEIGHT / 2}) rotate(-90)" text-anchor="middle" fill="#555555">ns per access</text>`,
  );
  // The legend: one entry per strength (colour), then the two line styles.
  const legendY = height - 22;
  let legendX = MARGIN.left;
  for (const [strength, color] of Object.entries(COLORS)) {
    out.push(
      `<line x1="${legendX}" x2="${legendX + 22}" y1="${legendY}" y2="${legendY}" stroke="${color}" stroke-width="2"/>`,
    );
    out.push(`<text x="${legendX + 28}" y="${legendY + 4}">${strength}</text>`);
    legendX += 28 + strength.length * 7 + 24;
  }
  out.push(
    `<line x1="${legendX}" x2="${legendX + 22}" y1="${legendY}" y2="${legendY}" stroke="#333333" stroke-width="2" stroke-dasharray="6 4"/>`,
  );
  out.push(
    `<text x="${legendX + 28}" y="${legendY + 4}">strict policy (Atomics RMW per barrier)</text>`,
  );
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
