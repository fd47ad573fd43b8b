// The power timeline: min/max band and mean per bucket for each device,
// downsampled on the server; drag to zoom (the server sends the finer
// buckets, down to the individual samples), double-click to go back.
// Cycles are shaded; requests run below the power (prefill orange, decode
// blue); within 10 s the tokens' arrivals are ticks along the top.
import uPlot from 'uplot';
import { h, num, palette, clear } from './dom';
import { get, Timeline } from './api';

export function timeline(runID: string, container: HTMLElement): void {
  const status = h('p', { class: 'tlstatus', role: 'status' }, 'loading the power timeline…');
  const back = h('button', { type: 'button', disabled: true }, 'whole run') as HTMLButtonElement;
  const plotBox = h('div', { class: 'plot', id: 'timeline-plot' });
  container.appendChild(h('div', { class: 'tlbar' }, back, status));
  container.appendChild(plotBox);
  let t0 = 0;
  let whole: [number, number] | null = null;
  let plot: uPlot | null = null;
  let data: Timeline | null = null;

  const load = async (from?: number, to?: number) => {
    const width = Math.max(300, Math.min(4000, Math.round(plotBox.clientWidth || 900)));
    const q = new URLSearchParams({ points: String(width) });
    if (from !== undefined && to !== undefined) { q.set('from_ns', String(Math.floor(from))); q.set('to_ns', String(Math.ceil(to))); }
    status.textContent = 'loading…';
    try {
      data = await get<Timeline>(`/api/runs/${encodeURIComponent(runID)}/timeline?${q}`);
    } catch (e) {
      status.textContent = `the timeline could not be loaded: ${(e as Error).message}`;
      return;
    }
    if (!whole) { whole = [data.from_ns, data.to_ns]; t0 = data.from_ns; }
    back.disabled = from === undefined;
    draw(data);
  };

  const draw = (d: Timeline) => {
    // One x grid for all series: each device's buckets in seconds since the run's start.
    const xs = [...new Set(d.series.flatMap((s) => s.t))].sort((a, b) => a - b);
    const pos = new Map(xs.map((t, i) => [t, i]));
    const cols: (number | null)[][] = [xs.map((t) => (t - t0) / 1e9)];
    const series: uPlot.Series[] = [{ label: 's since start' }];
    const bands: uPlot.Band[] = [];
    d.series.forEach((s, k) => {
      const c = palette[k % palette.length];
      const mk = (v: number[]) => { const col: (number | null)[] = new Array(xs.length).fill(null); s.t.forEach((t, i) => { col[pos.get(t) as number] = v[i]; }); return col; };
      const base = cols.length;
      cols.push(mk(s.max), mk(s.min), mk(s.mean));
      const name = `${s.device.slice(0, 12)}… (${s.source})`;
      series.push({ label: `${name} max`, stroke: c + '55', width: 1, spanGaps: false, show: !s.raw });
      series.push({ label: `${name} min`, stroke: c + '55', width: 1, spanGaps: false, show: !s.raw });
      series.push({ label: `${name} W`, stroke: c, width: 1.5, spanGaps: false, points: { show: s.raw } });
      if (!s.raw) bands.push({ series: [base, base + 1], fill: c + '33' });
    });
    const n = d.series.reduce((a, s) => a + s.n, 0);
    const res = d.series.some((s) => s.raw) ? 'every sample' : `buckets of ${num(d.bucket_ns / 1e6)} ms (min/max band, mean line)`;
    status.textContent = `${num((d.to_ns - d.from_ns) / 1e9)} s shown · ${n.toLocaleString('en')} power samples · ${res} · ${d.requests_total} requests` +
      (d.tokens ? ` · ${d.tokens.length} token arrivals` : ' · zoom under 10 s to see tokens');
    const opts: uPlot.Options = {
      width: Math.max(300, plotBox.clientWidth || 900), height: 360, series, bands,
      // Below 0 W is the requests' lane area, so that they never hide the power.
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [-0.35 * max, max * 1.05] } },
      axes: [{ label: 'seconds since the run started' }, { label: 'power, W', filter: (_u, splits) => splits.map((v) => (v < 0 ? null : v)) }],
      cursor: { drag: { x: true, y: false, setScale: false } },
      legend: { show: true },
      hooks: {
        drawClear: [(u) => shadeCycles(u, d, t0)],
        draw: [(u) => drawRequests(u, d, t0)],
        setSelect: [(u) => {
          if (u.select.width < 4) return;
          const a = u.posToVal(u.select.left, 'x'), b = u.posToVal(u.select.left + u.select.width, 'x');
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          load(t0 + a * 1e9, t0 + b * 1e9);
        }],
      },
    };
    if (plot) plot.destroy();
    clear(plotBox);
    plot = new uPlot(opts, cols as uPlot.AlignedData, plotBox);
  };

  back.addEventListener('click', () => { if (whole) load(); });
  plotBox.addEventListener('dblclick', () => { if (whole) load(); });
  load();
}

function shadeCycles(u: uPlot, d: Timeline, t0: number) {
  const ctx = u.ctx;
  ctx.save();
  for (const [cyc, from, to] of d.cycles) {
    if (!to) continue;
    const a = u.valToPos((from - t0) / 1e9, 'x', true), b = u.valToPos((to - t0) / 1e9, 'x', true);
    if (b < u.bbox.left || a > u.bbox.left + u.bbox.width) continue;
    ctx.fillStyle = cyc < 0 ? 'rgba(120,120,120,0.10)' : cyc % 2 ? 'rgba(0,114,178,0.06)' : 'rgba(0,158,115,0.07)';
    ctx.fillRect(a, u.bbox.top, b - a, u.bbox.height);
    ctx.fillStyle = '#444';
    ctx.font = `${11 * devicePixelRatio}px sans-serif`;
    ctx.fillText(cyc < 0 ? 'idle baseline' : `cycle ${cyc}`, Math.max(a, u.bbox.left) + 4, u.bbox.top + 14 * devicePixelRatio);
  }
  ctx.restore();
}

function drawRequests(u: uPlot, d: Timeline, t0: number) {
  const ctx = u.ctx;
  const lanes = 24;
  const zero = u.valToPos(0, 'y', true) + 3 * devicePixelRatio;
  const laneH = Math.max(1, (u.bbox.top + u.bbox.height - zero) / lanes);
  const base = zero;
  const x = (ns: number) => u.valToPos((ns - t0) / 1e9, 'x', true);
  ctx.save();
  ctx.beginPath();
  ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
  ctx.clip();
  d.requests.forEach((r, i) => {
    const y = base + (i % lanes) * laneH;
    const h = Math.max(1, laneH - 1);
    if (r.first_token > 0) {
      ctx.fillStyle = 'rgba(230,159,0,0.85)';
      ctx.fillRect(x(r.sent), y, Math.max(1, x(r.first_token) - x(r.sent)), h);
      ctx.fillStyle = r.ok ? 'rgba(0,114,178,0.55)' : 'rgba(213,94,0,0.8)';
      ctx.fillRect(x(r.first_token), y, Math.max(1, x(r.done) - x(r.first_token)), h);
    } else {
      ctx.fillStyle = 'rgba(213,94,0,0.8)';
      ctx.fillRect(x(r.sent), y, Math.max(1, x(r.done) - x(r.sent)), h);
    }
  });
  if (d.tokens) {
    ctx.strokeStyle = 'rgba(0,0,0,0.55)';
    ctx.lineWidth = 1;
    for (const [ts] of d.tokens) {
      const px = x(ts);
      ctx.beginPath();
      ctx.moveTo(px, u.bbox.top);
      ctx.lineTo(px, u.bbox.top + 8 * devicePixelRatio);
      ctx.stroke();
    }
  }
  ctx.restore();
}
