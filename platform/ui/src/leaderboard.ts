// The leaderboard: every query parameter lives in the URL (shareable);
// sorting, filtering and paging happen on the server.
import { h, num, withCI, date, clear, params as paramCount } from './dom';
import { get, Leaderboard, Entry } from './api';
import { scatter, heatmap } from './charts';
import { navigate } from './main';
import { exportable } from './export';

const dims = ['workload', 'model', 'backend', 'hardware', 'precision', 'parallelism'];

interface Column { key: string; label: string; title: string; sort?: string; cell: (e: Entry) => Node | string; num?: boolean }

const chosen = new Set<string>();

const columns: Column[] = [
  { key: 'pick', label: 'Compare', title: 'choose runs to compare', cell: (e) => h('input', { type: 'checkbox', class: 'pick', 'aria-label': `compare ${e.model} (${e.run_id})`, checked: chosen.has(e.run_id),
    onchange: (ev: Event) => { if ((ev.target as HTMLInputElement).checked) chosen.add(e.run_id); else chosen.delete(e.run_id); updateCompare(); } }) },
  { key: 'model', label: 'Model', title: 'model as served', sort: 'model', cell: (e) => h('a', { href: `/runs/${encodeURIComponent(e.run_id)}`, class: 'runlink' }, e.model) },
  { key: 'backend', label: 'Backend', title: 'inference backend', sort: 'backend', cell: (e) => e.backend },
  { key: 'hardware', label: 'Hardware', title: 'GPUs of the run', sort: 'hardware', cell: (e) => e.hardware },
  { key: 'config', label: 'Precision · parallelism', title: 'precision and tensor/pipeline/data parallelism', cell: (e) => `${e.precision} · ${e.parallelism}` },
  { key: 'j_per_token', label: 'J/token', title: 'energy per output token, mean over cycles ± 95% CI', sort: 'j_per_token', num: true, cell: (e) => withCI(e.j_per_token, e.j_per_token_ci95) },
  { key: 'j_per_request', label: 'J/request', title: 'energy per successful request ± 95% CI', sort: 'j_per_request', num: true, cell: (e) => withCI(e.j_per_request, e.j_per_request_ci95) },
  { key: 'tokens_per_s', label: 'tokens/s', title: 'output tokens per second', sort: 'tokens_per_s', num: true, cell: (e) => num(e.tokens_per_s) },
  { key: 'ttft', label: 'TTFT p50 / p99 ms', title: 'time to first token, median and 99th percentile', sort: 'ttft_p50_ms', num: true, cell: (e) => `${num(e.ttft_p50_ms)} / ${num(e.ttft_p99_ms)}` },
  { key: 'itl_p50_ms', label: 'ITL p50 ms', title: 'inter-token latency, median', sort: 'itl_p50_ms', num: true, cell: (e) => num(e.itl_p50_ms) },
  { key: 'mean_power_w', label: 'Power W', title: 'mean power of the run\'s devices over the cycles', sort: 'mean_power_w', num: true, cell: (e) => num(e.mean_power_w) },
  { key: 'gpus', label: 'GPUs', title: 'devices measured', sort: 'gpus', num: true, cell: (e) => String(e.gpus) },
  { key: 'parameters', label: 'Params', title: 'the model\'s parameter count as the run recorded it (hover for its source)', sort: 'parameters', num: true,
    cell: (e) => h('span', { title: e.parameters_source ?? 'not recorded: the server did not report it, its weights were not on the host, and backend.model_parameters was not set' }, paramCount(e.parameters)) },
  { key: 'badges', label: 'Quality', title: 'quality flags and verification', cell: (e) => badges(e) },
  { key: 'submitter', label: 'Submitter', title: 'who published it', sort: 'submitter', cell: (e) => e.submitter },
  { key: 'started_ns', label: 'Date', title: 'when the run started', sort: 'started_ns', cell: (e) => date(e.started_ns) },
];

let compareLink: HTMLAnchorElement | null = null;

function updateCompare() {
  if (!compareLink) return;
  compareLink.textContent = `Compare ${chosen.size} chosen runs`;
  compareLink.href = `/compare?runs=${[...chosen].map(encodeURIComponent).join(',')}`;
  compareLink.classList.toggle('disabled', chosen.size < 2);
  compareLink.setAttribute('aria-disabled', String(chosen.size < 2));
}

export function badges(e: Entry): HTMLElement {
  const out = h('span', { class: 'badges' });
  const v = { verified: ['verified', 'uploaded; every figure recomputed from its raw events and every check passed'],
    recomputed: ['recomputed', 'from the platform\'s own store: recomputed from the raw events, not uploaded'],
    failed: ['check failed', 'a verification check failed: see the run\'s report'] }[e.verification] ?? [e.verification, ''];
  out.appendChild(h('span', { class: `badge v-${e.verification}`, title: v[1] }, v[0]));
  if (e.simulated) out.appendChild(h('span', { class: 'badge sim', title: 'power from the simulator: exercises the pipeline, not a measurement' }, 'simulated'));
  for (const f of e.flags) out.appendChild(h('span', { class: 'badge flag', title: 'quality flag (see methodology)' }, f));
  if (!e.simulated && e.flags.length === 0 && e.quality === 'ok') out.appendChild(h('span', { class: 'badge ok', title: 'no quality flag' }, 'ok'));
  return out;
}

export async function leaderboard(root: HTMLElement, params: URLSearchParams): Promise<void> {
  clear(root);
  document.title = 'Leaderboard — lem';
  const lb = await get<Leaderboard>('/api/leaderboard?' + params.toString());
  const set = (k: string, v: string | null) => {
    const p = new URLSearchParams(params);
    if (v === null || v === '') p.delete(k); else p.set(k, v);
    if (k !== 'page') p.delete('page');
    navigate('/?' + p.toString());
  };

  root.appendChild(h('h1', {}, 'Energy of LLM inference'));
  root.appendChild(h('p', { class: 'lede' },
    'Every figure below was recomputed by this platform from the raw power, counter and token events of its run, with its 95% interval over cycles and its quality flags. Open a run to see the events.'));

  // Filters.
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e: Event) => { e.preventDefault(); set('q', (document.getElementById('q') as HTMLInputElement).value); } });
  for (const d of dims) {
    const facets = lb.facets[d] ?? [];
    const cur = params.get(d) ?? (d === 'workload' ? lb.workload : '');
    const sel = h('select', { id: `f-${d}`, name: d, onchange: (e: Event) => set(d, (e.target as HTMLSelectElement).value) }) as HTMLSelectElement;
    if (d === 'workload') sel.appendChild(h('option', { value: '*', selected: cur === '*' }, 'all workloads (not comparable)'));
    else sel.appendChild(h('option', { value: '' }, 'any'));
    for (const f of facets) sel.appendChild(h('option', { value: f.value, selected: f.value === cur }, `${f.value || '(none)'} (${f.count})`));
    form.appendChild(h('label', { for: `f-${d}` }, d, sel));
  }
  const verified = h('input', { type: 'checkbox', id: 'f-verified', checked: params.get('verified') === '1', onchange: (e: Event) => set('verified', (e.target as HTMLInputElement).checked ? '1' : null) });
  form.appendChild(h('label', { for: 'f-verified', class: 'check' }, verified, 'verified only'));
  form.appendChild(h('label', { for: 'q' }, 'search', h('input', { id: 'q', type: 'search', value: params.get('q') ?? '', placeholder: 'model, hardware, run…' })));
  form.appendChild(h('button', { type: 'submit' }, 'Search'));
  root.appendChild(form);
  if (lb.notice) root.appendChild(h('p', { class: 'notice', role: 'status' }, lb.notice));

  // The efficiency scatter of this page's runs.
  const pts = lb.rows.filter((e) => e.j_per_token !== null && e.tokens_per_s !== null)
    .map((e) => ({ x: 1 / (e.j_per_token as number), y: e.tokens_per_s as number, label: `${e.model} (${paramCount(e.parameters)} parameters) · ${e.backend} · ${e.hardware}`,
      group: e.backend, size: e.parameters, href: `/runs/${encodeURIComponent(e.run_id)}` }));
  const eff = scatter(pts, 'tokens per joule (higher is more efficient)', 'output tokens/s', 'Efficiency against throughput, coloured by backend, sized by model parameters', navigate);
  const scale = lb.rows.filter((e) => e.j_per_token !== null)
    .map((e) => ({ x: e.gpus, y: 1 / (e.j_per_token as number), label: `${e.model} · ${e.hardware} · ${e.gpus} GPUs`, group: e.model, href: `/runs/${encodeURIComponent(e.run_id)}` }));
  const sc = scatter(scale, 'GPUs', 'tokens per joule', 'Efficiency against the number of GPUs, coloured by model', navigate);
  // Load × precision: mean tokens per joule of this page's runs in each cell.
  const acc = new Map<string, { row: string; col: string; sum: number; n: number }>();
  for (const e of lb.rows) {
    if (e.j_per_token === null) continue;
    const k = `${e.load}\u0000${e.precision}`;
    const c = acc.get(k) ?? { row: e.load || '(unknown)', col: e.precision || '(none)', sum: 0, n: 0 };
    c.sum += 1 / e.j_per_token;
    c.n++;
    acc.set(k, c);
  }
  const hm = heatmap([...acc.values()].map((c) => ({ row: c.row, col: c.col, value: c.sum / c.n, n: c.n })), 'load', 'precision', 'tokens/J', 'Tokens per joule by load and precision');
  root.appendChild(h('div', { class: 'charts' },
    h('figure', { class: 'chartbox' }, hm, h('figcaption', {}, 'Load × precision: mean tokens per joule of this page\'s runs in each cell, with how many runs it averages. ', exportable(hm, 'load-precision'))),
    h('figure', { class: 'chartbox' }, eff, h('figcaption', {}, 'Efficiency against throughput of the runs on this page, coloured by backend; a disc’s area is the model’s parameter count, a ring a run that did not record it. Select a point to open its run. ', exportable(eff, 'efficiency'))),
    h('figure', { class: 'chartbox' }, sc, h('figcaption', {}, 'Hardware scaling: efficiency against GPU count, coloured by model. ', exportable(sc, 'scaling')))));

  // The table.
  const sort = lb.sort, desc = lb.desc;
  const thead = h('thead', {}, h('tr', {}, columns.map((c) => {
    if (!c.sort) return h('th', { scope: 'col', title: c.title, class: c.num ? 'num' : '' }, c.label);
    const active = c.sort === sort;
    const next = active && !desc ? 'desc' : 'asc';
    const btn = h('button', { type: 'button', class: 'sort', title: `${c.title} — sort ${next === 'asc' ? 'ascending' : 'descending'}`,
      onclick: () => { const p = new URLSearchParams(params); p.set('sort', c.sort as string); p.set('order', next); p.delete('page'); navigate('/?' + p.toString()); } },
    c.label, active ? (desc ? ' ▼' : ' ▲') : '');
    return h('th', { scope: 'col', class: c.num ? 'num' : '', 'aria-sort': active ? (desc ? 'descending' : 'ascending') : 'none' }, btn);
  })));
  const tbody = h('tbody', {}, lb.rows.map((e) => h('tr', { 'data-run': e.run_id }, columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(e))))));
  const table = h('table', { class: 'board' }, h('caption', {}, `${lb.total} runs · workload: ${lb.workload === '*' ? 'all' : lb.workload}`), thead, tbody);
  root.appendChild(h('div', { class: 'tablewrap' }, table));
  if (lb.rows.length === 0) root.appendChild(h('p', { class: 'empty' }, 'No run matches these filters.'));
  compareLink = h('a', { id: 'compare-link', class: 'button', href: '/compare' }) as HTMLAnchorElement;
  updateCompare();
  root.appendChild(h('p', {}, compareLink));

  // Pages.
  const pages = Math.max(1, Math.ceil(lb.total / lb.per_page));
  const nav = h('nav', { class: 'pager', 'aria-label': 'pages' },
    h('button', { type: 'button', disabled: lb.page <= 1, onclick: () => set('page', String(lb.page - 1)) }, '← previous'),
    h('span', {}, `page ${lb.page} of ${pages}`),
    h('button', { type: 'button', disabled: lb.page >= pages, onclick: () => set('page', String(lb.page + 1)) }, 'next →'));
  root.appendChild(nav);
}
