// Charts drawn as SVG (small, exportable, readable by screen readers
// through their titles): the efficiency scatter, histograms, bars with
// confidence intervals, box plots over cycles.
import { s, num, colourOf, palette, params } from './dom';

// size, where given (null: unknown), scales the marker's area.
export interface Point { x: number; y: number; label: string; group: string; href?: string; size?: number | null }

interface Frame { w: number; h: number; l: number; r: number; t: number; b: number }
const frame: Frame = { w: 640, h: 300, l: 64, r: 16, t: 16, b: 44 };

function scale(lo: number, hi: number, a: number, b: number) {
  if (hi === lo) { hi = lo + 1; }
  return (v: number) => a + ((v - lo) / (hi - lo)) * (b - a);
}

function ticks(lo: number, hi: number, n = 5): number[] {
  const step0 = (hi - lo) / n;
  if (!(step0 > 0)) return [lo];
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((m) => m >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function axes(svg: SVGElement, x: (v: number) => number, y: (v: number) => number, xs: number[], ys: number[], xl: string, yl: string, right = frame.w - frame.r) {
  const f = frame;
  svg.appendChild(s('line', { x1: f.l, y1: f.h - f.b, x2: right, y2: f.h - f.b, class: 'axis' }));
  svg.appendChild(s('line', { x1: f.l, y1: f.t, x2: f.l, y2: f.h - f.b, class: 'axis' }));
  for (const v of xs) {
    svg.appendChild(s('line', { x1: x(v), y1: f.h - f.b, x2: x(v), y2: f.h - f.b + 4, class: 'axis' }));
    svg.appendChild(s('text', { x: x(v), y: f.h - f.b + 16, 'text-anchor': 'middle', class: 'tick' }, num(v)));
  }
  for (const v of ys) {
    svg.appendChild(s('line', { x1: f.l - 4, y1: y(v), x2: right, y2: y(v), class: 'grid' }));
    svg.appendChild(s('text', { x: f.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, num(v)));
  }
  svg.appendChild(s('text', { x: (f.l + right) / 2, y: f.h - 6, 'text-anchor': 'middle', class: 'label' }, xl));
  svg.appendChild(s('text', { x: 14, y: (f.t + f.h - f.b) / 2, 'text-anchor': 'middle', class: 'label', transform: `rotate(-90 14 ${(f.t + f.h - f.b) / 2})` }, yl));
}

function svgRoot(title: string): SVGElement {
  const svg = s('svg', { viewBox: `0 0 ${frame.w} ${frame.h}`, role: 'img', class: 'chart' });
  svg.appendChild(s('title', {}, title));
  return svg;
}

// scatter: efficiency (x) against throughput (y), coloured by group.
export function scatter(points: Point[], xl: string, yl: string, title: string, onOpen: (href: string) => void): SVGElement {
  const svg = svgRoot(title);
  const f = frame;
  if (points.length === 0) {
    svg.appendChild(s('text', { x: f.w / 2, y: f.h / 2, 'text-anchor': 'middle', class: 'nodata' }, 'no runs with both figures'));
    return svg;
  }
  const xsV = points.map((p) => p.x), ysV = points.map((p) => p.y);
  const pad = (lo: number, hi: number) => { const d = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1; return [Math.max(0, lo - d), hi + d]; };
  const [x0, x1] = pad(Math.min(...xsV), Math.max(...xsV));
  const [y0, y1] = pad(Math.min(...ysV), Math.max(...ysV));
  // The legend has a column of its own right of the plot.
  const legendW = 150;
  const x = scale(x0, x1, f.l, f.w - f.r - legendW), y = scale(y0, y1, f.h - f.b, f.t);
  axes(svg, x, y, ticks(x0, x1), ticks(y0, y1), xl, yl, f.w - f.r - legendW);
  const groups = [...new Set(points.map((p) => p.group))].sort();
  // Sized points: area proportional to size (radius ∝ √size), the largest
  // 14 px; a point whose size is unknown is a hollow ring of the default
  // radius, never a guessed size.
  const sizes = points.map((p) => p.size).filter((v): v is number => typeof v === 'number' && v > 0);
  const sized = points.some((p) => p.size !== undefined);
  const maxSize = Math.max(...sizes, 0);
  const radius = (v: number) => Math.max(2.5, 14 * Math.sqrt(v / maxSize));
  // Big markers first, so small ones stay on top and clickable.
  const order = [...points].sort((a, b) => (b.size ?? 0) - (a.size ?? 0));
  for (const p of order) {
    const known = typeof p.size === 'number' && p.size > 0;
    const colour = colourOf(groups, p.group);
    const attrs: Record<string, string | number> = !sized ? { r: 6, fill: colour } : known ? { r: radius(p.size as number), fill: colour, 'fill-opacity': 0.75 } : { r: 6, fill: 'none' };
    const c = s('circle', { cx: x(p.x), cy: y(p.y), ...attrs, class: sized && !known ? 'dot ring' : 'dot', tabindex: 0, 'data-group': p.group });
    if (sized && !known) c.style.stroke = colour; // the stylesheet's white outline is for discs
    c.appendChild(s('title', {}, `${p.label}\n${xl}: ${num(p.x)}\n${yl}: ${num(p.y)}`));
    if (p.href) {
      const href = p.href;
      c.addEventListener('click', () => onOpen(href));
      c.addEventListener('keydown', (e) => { if ((e as KeyboardEvent).key === 'Enter') onOpen(href); });
    }
    svg.appendChild(c);
  }
  // Legend entries toggle their group's points (click, Enter or Space).
  groups.forEach((g, i) => {
    const lx = f.w - f.r - legendW + 16, ly = f.t + 10 + i * 16;
    const item = s('g', { class: 'legend-item', tabindex: 0, role: 'button', 'aria-pressed': 'true' },
      s('circle', { cx: lx, cy: ly - 4, r: 5, fill: palette[i % palette.length] }),
      s('text', { x: lx + 10, y: ly, class: 'legend' }, g));
    const toggle = () => {
      const on = item.getAttribute('aria-pressed') !== 'true';
      item.setAttribute('aria-pressed', String(on));
      item.style.opacity = on ? '1' : '0.35';
      svg.querySelectorAll('circle.dot').forEach((d) => {
        if (d.getAttribute('data-group') === g) (d as SVGElement).style.display = on ? '' : 'none';
      });
    };
    item.addEventListener('click', toggle);
    item.addEventListener('keydown', (e) => {
      const k = (e as KeyboardEvent).key;
      if (k === 'Enter' || k === ' ') { e.preventDefault(); toggle(); }
    });
    svg.appendChild(item);
  });
  if (sized) {
    // Size key: the largest and a tenth of it, and the hollow ring.
    let ly = f.t + 10 + groups.length * 16 + 14;
    const lx = f.w - f.r - legendW + 16;
    svg.appendChild(s('text', { x: lx - 6, y: ly, class: 'legend' }, 'area: parameters'));
    ly += 8;
    if (maxSize > 0) {
      for (const v of [maxSize, maxSize / 10]) {
        const r = radius(v);
        svg.appendChild(s('circle', { cx: lx + 8, cy: ly + r, r, fill: '#9aa0a6', 'fill-opacity': 0.6 }));
        svg.appendChild(s('text', { x: lx + 26, y: ly + r + 4, class: 'legend' }, params(v)));
        ly += 2 * r + 6;
      }
    }
    if (sizes.length < points.length) {
      svg.appendChild(s('circle', { cx: lx + 8, cy: ly + 6, r: 6, fill: 'none', stroke: '#5f6368', 'stroke-width': 2 }));
      svg.appendChild(s('text', { x: lx + 26, y: ly + 10, class: 'legend' }, 'not recorded'));
    }
  }
  return svg;
}

// histogram of a distribution in equal bins.
export function histogram(hist: { Min: number; Max: number; Counts: number[]; N: number }, xl: string, title: string): SVGElement {
  const svg = svgRoot(title);
  const f = frame;
  const n = hist.Counts.length;
  const top = Math.max(...hist.Counts, 1);
  const lo = hist.Min, hi = hist.Max > hist.Min ? hist.Max : hist.Min + 1;
  const x = scale(lo, hi, f.l, f.w - f.r), y = scale(0, top * 1.05, f.h - f.b, f.t);
  axes(svg, x, y, ticks(lo, hi), ticks(0, top), xl, 'requests');
  const w = (hi - lo) / n;
  hist.Counts.forEach((c, i) => {
    if (c === 0) return;
    const r = s('rect', { x: x(lo + i * w) + 0.5, y: y(c), width: Math.max(1, x(lo + (i + 1) * w) - x(lo + i * w) - 1), height: y(0) - y(c), class: 'bar' });
    r.appendChild(s('title', {}, `${num(lo + i * w)} – ${num(lo + (i + 1) * w)}: ${c} requests`));
    svg.appendChild(r);
  });
  return svg;
}

// bars with 95% intervals, one per label; null values say "no data".
export function bars(items: { label: string; value: number | null; ci: number | null; colour?: string }[], yl: string, title: string): SVGElement {
  const svg = svgRoot(title);
  const f = frame;
  const vals = items.map((i) => (i.value ?? 0) + (i.ci ?? 0));
  const top = Math.max(...vals, 0) * 1.1 || 1;
  const y = scale(0, top, f.h - f.b, f.t);
  const bw = (f.w - f.l - f.r) / Math.max(items.length, 1);
  axes(svg, () => -100, y, [], ticks(0, top), '', yl);
  items.forEach((it, i) => {
    const cx = f.l + bw * (i + 0.5);
    svg.appendChild(s('text', { x: cx, y: f.h - f.b + 16, 'text-anchor': 'middle', class: 'tick' }, it.label.length > 28 ? it.label.slice(0, 27) + '…' : it.label));
    if (it.value === null) {
      svg.appendChild(s('text', { x: cx, y: f.h - f.b - 8, 'text-anchor': 'middle', class: 'nodata' }, 'no data'));
      return;
    }
    const r = s('rect', { x: cx - bw * 0.3, y: y(it.value), width: bw * 0.6, height: y(0) - y(it.value), fill: it.colour ?? palette[i % palette.length] });
    r.appendChild(s('title', {}, `${it.label}: ${num(it.value)}${it.ci !== null ? ' ± ' + num(it.ci, 2) : ''}`));
    svg.appendChild(r);
    if (it.ci !== null) {
      svg.appendChild(s('line', { x1: cx, x2: cx, y1: y(it.value - it.ci), y2: y(it.value + it.ci), class: 'ci' }));
      for (const v of [it.value - it.ci, it.value + it.ci]) svg.appendChild(s('line', { x1: cx - 6, x2: cx + 6, y1: y(v), y2: y(v), class: 'ci' }));
    }
    svg.appendChild(s('text', { x: cx, y: y(it.value + (it.ci ?? 0)) - 6, 'text-anchor': 'middle', class: 'value' }, num(it.value)));
  });
  return svg;
}

// box plots of per-cycle values, one per label.
export function boxes(items: { label: string; values: number[] }[], yl: string, title: string): SVGElement {
  const svg = svgRoot(title);
  const f = frame;
  const all = items.flatMap((i) => i.values);
  if (all.length === 0) {
    svg.appendChild(s('text', { x: f.w / 2, y: f.h / 2, 'text-anchor': 'middle', class: 'nodata' }, 'no data'));
    return svg;
  }
  const lo0 = Math.min(...all), hi0 = Math.max(...all), d = (hi0 - lo0) * 0.1 || Math.abs(hi0) * 0.05 || 1;
  const y = scale(lo0 - d, hi0 + d, f.h - f.b, f.t);
  axes(svg, () => -100, y, [], ticks(lo0 - d, hi0 + d), '', yl);
  const bw = (f.w - f.l - f.r) / Math.max(items.length, 1);
  const q = (xs: number[], p: number) => { const a = [...xs].sort((m, n) => m - n); const i = (a.length - 1) * p; const k = Math.floor(i); return a[k] + (a[Math.min(k + 1, a.length - 1)] - a[k]) * (i - k); };
  items.forEach((it, i) => {
    const cx = f.l + bw * (i + 0.5), c = palette[i % palette.length];
    svg.appendChild(s('text', { x: cx, y: f.h - f.b + 16, 'text-anchor': 'middle', class: 'tick' }, it.label));
    if (it.values.length === 0) { svg.appendChild(s('text', { x: cx, y: f.h - f.b - 8, 'text-anchor': 'middle', class: 'nodata' }, 'no data')); return; }
    const [mn, q1, md, q3, mx] = [0, 0.25, 0.5, 0.75, 1].map((p) => q(it.values, p));
    svg.appendChild(s('line', { x1: cx, x2: cx, y1: y(mn), y2: y(mx), stroke: c, class: 'whisker' }));
    const r = s('rect', { x: cx - bw * 0.2, y: y(q3), width: bw * 0.4, height: Math.max(1, y(q1) - y(q3)), fill: c, class: 'box' });
    r.appendChild(s('title', {}, `${it.label}: median ${num(md)}, quartiles ${num(q1)} – ${num(q3)}, range ${num(mn)} – ${num(mx)} (${it.values.length} cycles)`));
    svg.appendChild(r);
    svg.appendChild(s('line', { x1: cx - bw * 0.2, x2: cx + bw * 0.2, y1: y(md), y2: y(md), class: 'median' }));
    for (const v of it.values) svg.appendChild(s('circle', { cx: cx + bw * 0.28, cy: y(v), r: 3, fill: c }));
  });
  return svg;
}

// heatmap: a value per (row, column) cell with the number of runs behind
// it; empty cells say "no runs". Colours from light (low) to dark (high)
// on one hue, labelled with their values, so colour is never the only cue.
export function heatmap(cells: { row: string; col: string; value: number; n: number }[], rowLabel: string, colLabel: string, valueLabel: string, title: string): SVGElement {
  const svg = svgRoot(title);
  const f = frame;
  const rows = [...new Set(cells.map((c) => c.row))].sort();
  const cols = [...new Set(cells.map((c) => c.col))].sort();
  if (cells.length === 0) {
    svg.appendChild(s('text', { x: f.w / 2, y: f.h / 2, 'text-anchor': 'middle', class: 'nodata' }, 'no runs with this figure'));
    return svg;
  }
  const left = 120, top = f.t + 8, w = (f.w - left - f.r) / cols.length, hh = (f.h - top - f.b) / rows.length;
  const vs = cells.map((c) => c.value);
  const lo = Math.min(...vs), hi = Math.max(...vs);
  const shade = (v: number) => {
    const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    const l = 92 - t * 62; // lightness 92% → 30%
    return [`hsl(205, 70%, ${l}%)`, l < 55 ? '#fff' : '#111'];
  };
  rows.forEach((r, i) => svg.appendChild(s('text', { x: left - 8, y: top + hh * (i + 0.5) + 4, 'text-anchor': 'end', class: 'tick' }, r)));
  cols.forEach((c, j) => svg.appendChild(s('text', { x: left + w * (j + 0.5), y: f.h - f.b + 16, 'text-anchor': 'middle', class: 'tick' }, c)));
  svg.appendChild(s('text', { x: left + (f.w - left - f.r) / 2, y: f.h - 6, 'text-anchor': 'middle', class: 'label' }, colLabel));
  svg.appendChild(s('text', { x: 14, y: (top + f.h - f.b) / 2, 'text-anchor': 'middle', class: 'label', transform: `rotate(-90 14 ${(top + f.h - f.b) / 2})` }, rowLabel));
  rows.forEach((r, i) => cols.forEach((c, j) => {
    const cell = cells.find((x) => x.row === r && x.col === c);
    const x = left + w * j, y = top + hh * i;
    if (!cell) {
      svg.appendChild(s('rect', { x: x + 1, y: y + 1, width: w - 2, height: hh - 2, fill: '#f3f4f6' }));
      svg.appendChild(s('text', { x: x + w / 2, y: y + hh / 2 + 4, 'text-anchor': 'middle', class: 'nodata' }, 'no runs'));
      return;
    }
    const [bg, fg] = shade(cell.value);
    const rect = s('rect', { x: x + 1, y: y + 1, width: w - 2, height: hh - 2, fill: bg });
    rect.appendChild(s('title', {}, `${r} · ${c}: ${valueLabel} ${num(cell.value)} (${cell.n} runs)`));
    svg.appendChild(rect);
    const t1 = s('text', { x: x + w / 2, y: y + hh / 2, 'text-anchor': 'middle', class: 'value' }, num(cell.value));
    t1.style.fill = fg;
    const t2 = s('text', { x: x + w / 2, y: y + hh / 2 + 14, 'text-anchor': 'middle', class: 'tick' }, `${cell.n} run${cell.n === 1 ? '' : 's'}`);
    t2.style.fill = fg;
    svg.appendChild(t1);
    svg.appendChild(t2);
  }));
  return svg;
}
