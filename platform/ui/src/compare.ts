// The comparison page: chosen runs side by side (the URL holds them, so a
// comparison is a link to share): bars with 95% intervals, J/token over
// cycles as box plots, and the figures in one table.
import { h, num, withCI, clear, palette } from './dom';
import { get, RunPage } from './api';
import { bars, boxes } from './charts';
import { badges } from './leaderboard';
import { exportable } from './export';

export async function comparePage(root: HTMLElement, params: URLSearchParams): Promise<void> {
  clear(root);
  document.title = 'Compare runs — lem';
  const ids = (params.get('runs') ?? '').split(',').filter((x) => x !== '');
  root.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '/' }, '← leaderboard')));
  root.appendChild(h('h1', {}, `Comparing ${ids.length} runs`));
  if (ids.length < 2) {
    root.appendChild(h('p', {}, 'Choose two or more runs on the leaderboard (the boxes in the first column), then "Compare".'));
    return;
  }
  const pages = await Promise.all(ids.map((id) => get<RunPage>(`/api/runs/${encodeURIComponent(id)}`)));
  // Labels name what differs: model, backend and hardware, or else the run.
  const base = (p: RunPage) => `${p.entry.model} · ${p.entry.backend} · ${p.entry.hardware}`;
  const unique = new Set(pages.map(base)).size === pages.length;
  const label = (p: RunPage) => (unique ? base(p) : `${p.entry.model} · ${p.entry.workload} · ${p.entry.run_id.slice(-8)}`);
  const workloads = new Set(pages.map((p) => p.entry.workload));
  if (workloads.size > 1) root.appendChild(h('p', { class: 'notice' }, `These runs ran different workloads (${[...workloads].join('; ')}): their figures are not directly comparable.`));
  if (pages.some((p) => p.entry.simulated)) root.appendChild(h('p', { class: 'notice' }, 'Some of these runs are simulated: their power is not a measurement.'));
  const fig = (title: string, svg: SVGElement, caption: string) =>
    h('figure', { class: 'chartbox' }, svg, h('figcaption', {}, caption, ' ', exportable(svg, title)));
  const metric = (key: 'j_per_token' | 'j_per_request', ci: 'j_per_token_ci95' | 'j_per_request_ci95', yl: string) =>
    bars(pages.map((p, i) => ({ label: label(p), value: p.entry[key], ci: p.entry[ci], colour: palette[i % palette.length] })), yl, `${yl} by run`);
  root.appendChild(h('div', { class: 'charts' },
    fig('j-per-token', metric('j_per_token', 'j_per_token_ci95', 'J/token'), 'J/token, mean ± 95% CI over cycles.'),
    fig('j-per-request', metric('j_per_request', 'j_per_request_ci95', 'J/request'), 'J/request, mean ± 95% CI over cycles.'),
    fig('tokens-per-s', bars(pages.map((p, i) => ({ label: label(p), value: p.entry.tokens_per_s, ci: p.result.Summary['throughput_tok_s']?.CI95 ?? null, colour: palette[i % palette.length] })), 'output tokens/s', 'Throughput by run'), 'Output tokens per second, mean ± 95% CI.'),
    fig('j-per-token-cycles', boxes(pages.map((p) => ({ label: unique ? p.entry.model : p.entry.run_id.slice(-8), values: p.result.Cycles.map((c) => c.JPerToken).filter((v): v is number => v !== null) })), 'J/token', 'J/token over cycles by run'), 'J/token of each cycle: the spread behind each interval.')));
  const rows: [string, (p: RunPage) => Node | string][] = [
    ['run', (p) => h('a', { href: `/runs/${encodeURIComponent(p.entry.run_id)}` }, p.entry.run_id)],
    ['badges', (p) => badges(p.entry)],
    ['workload', (p) => p.entry.workload],
    ['precision · parallelism', (p) => `${p.entry.precision} · ${p.entry.parallelism}`],
    ['GPUs', (p) => String(p.entry.gpus)],
    ['cycles', (p) => String(p.entry.cycles)],
    ['J/token', (p) => withCI(p.entry.j_per_token, p.entry.j_per_token_ci95)],
    ['J/request', (p) => withCI(p.entry.j_per_request, p.entry.j_per_request_ci95)],
    ['tokens/s', (p) => num(p.entry.tokens_per_s)],
    ['mean power W', (p) => num(p.entry.mean_power_w)],
    ['TTFT p50 / p99 ms', (p) => `${num(p.entry.ttft_p50_ms)} / ${num(p.entry.ttft_p99_ms)}`],
    ['ITL p50 ms', (p) => num(p.entry.itl_p50_ms)],
    ['prefill J per cycle', (p) => withCI(p.result.Summary['prefill_j']?.Mean ?? null, p.result.Summary['prefill_j']?.CI95 ?? null)],
    ['decode J per cycle', (p) => withCI(p.result.Summary['decode_j']?.Mean ?? null, p.result.Summary['decode_j']?.CI95 ?? null)],
  ];
  root.appendChild(h('div', { class: 'tablewrap' }, h('table', { id: 'compare' }, h('caption', {}, 'The runs side by side'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, ''), pages.map((p) => h('th', { scope: 'col' }, label(p))))),
    h('tbody', {}, rows.map(([name, f]) => h('tr', {}, h('th', { scope: 'row' }, name), pages.map((p) => h('td', {}, f(p)))))))));
}
