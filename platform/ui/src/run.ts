// The experiment page: what was run, the cycles with their uncertainties
// and flags, the statistics over cycles, latency, the prefill/decode
// split, the per-request energy distribution, what else was happening,
// the verification report and the power timeline.
import { h, num, withCI, date, clear, params } from './dom';
import { get, RunPage, Cycle } from './api';
import { histogram, boxes, bars } from './charts';
import { badges } from './leaderboard';
import { timeline } from './timeline';

function table(caption: string, head: string[], rows: (Node | string)[][], numeric: boolean[] = []): HTMLElement {
  return h('div', { class: 'tablewrap' }, h('table', {}, h('caption', {}, caption),
    h('thead', {}, h('tr', {}, head.map((x, i) => h('th', { scope: 'col', class: numeric[i] ? 'num' : '' }, x)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => i === 0 ? h('th', { scope: 'row' }, c) : h('td', { class: numeric[i] ? 'num' : '' }, c)))))));
}

function section(title: string, ...body: (Node | null)[]): HTMLElement {
  const id = title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...body);
}

// flatten turns the run's configuration document into key paths.
function flatten(v: unknown, prefix = '', out: [string, string][] = []): [string, string][] {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.push([prefix, Array.isArray(v) ? JSON.stringify(v) : String(v)]);
  }
  return out;
}

const unset = new Set(['', '0', 'null', 'false', '[]', '{}', '0s']);

export async function runPage(root: HTMLElement, id: string): Promise<void> {
  clear(root);
  const p = await get<RunPage>(`/api/runs/${encodeURIComponent(id)}`);
  const e = p.entry, r = p.result;
  document.title = `${e.model} on ${e.hardware} — lem`;
  root.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '/' }, '← leaderboard')));
  root.appendChild(h('h1', {}, `${e.model} · ${e.backend} · ${e.hardware}`));
  root.appendChild(h('p', { class: 'runmeta' }, e.parameters !== null
    ? `${params(e.parameters)} parameters (${num(e.parameters, 4)}; from ${e.parameters_source})`
    : 'parameter count not recorded (the server did not report it, its weights were not on the host, and backend.model_parameters was not set)'));
  root.appendChild(h('p', { class: 'runmeta' }, badges(e), ` run ${e.run_id} · experiment ${e.experiment} · ${date(e.started_ns)} · submitted by `,
    e.submitter ? h('a', { href: `/users/${encodeURIComponent(e.submitter)}`, class: 'submitter' }, e.submitter) : '—'));
  if (e.simulated) root.appendChild(h('p', { class: 'notice' }, 'Simulated power: these figures exercise the pipeline and are not a measurement.'));
  if (e.moderation && e.moderation !== 'approved') {
    const state = { pending: 'awaiting a moderator’s decision', rejected: 'rejected by a moderator', changes_requested: 'sent back for changes by a moderator' }[e.moderation];
    root.appendChild(h('p', { class: 'notice', id: 'moderation-state' }, `Not public: ${state}. Only you and the moderators see this page.`));
  }
  if (p.decisions && p.decisions.length > 0) {
    root.appendChild(h('ul', { class: 'decisions' }, p.decisions.map((d) => h('li', {}, `${date(d.at_ns)}: ${d.decision.replace('_', ' ')} by ${d.moderator}`, d.reason ? ` — “${d.reason}”` : ''))));
  }

  // Headline figures.
  const stat = (k: string) => r.Summary[k];
  const headline = [
    ['J/token', withCI(e.j_per_token, e.j_per_token_ci95)], ['J/request', withCI(e.j_per_request, e.j_per_request_ci95)],
    ['tokens/s', num(e.tokens_per_s)], ['mean power', `${num(e.mean_power_w)} W`], ['TTFT p50', `${num(e.ttft_p50_ms)} ms`],
    ['ITL p50', `${num(e.itl_p50_ms)} ms`], ['cycles', String(e.cycles)],
  ];
  root.appendChild(h('dl', { class: 'headline' }, headline.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))));

  // Timeline.
  const tl = h('div', { class: 'timeline' });
  root.appendChild(section('Power timeline', h('p', { class: 'hint' }, 'Drag across the plot to zoom (down to the individual samples); double-click or "whole run" to go back. Requests run below the power: sent → first token (orange: queueing and prefill, as the client sees it), then decode (blue); failed requests red. Within 10 s, ticks along the top mark each streamed chunk’s arrival.'), tl));
  timeline(id, tl);

  // Cycles.
  const cyc = (c: Cycle): (Node | string)[] => [String(c.Cycle), num(c.DurationS), withCI(c.EnergyJ, c.EdgeUncJ), withCI(c.DynamicJ, c.DynamicUncJ),
    num(c.PrefillJ), num(c.DecodeJ), num(c.UnattributedJ), `${c.Requests - c.Failed}/${c.Requests}`, String(c.OutputTokens), num(c.JPerToken),
    [c.Quality, ...(c.Flags ?? [])].filter((x) => x && x !== 'ok').join(', ') || 'ok'];
  root.appendChild(section('Cycles',
    table('Per cycle; energy ± its random uncertainty (counter edges, read timing, calibration); the ±5% sensor gain is systematic and stated separately',
      ['cycle', 's', 'energy J', 'dynamic J', 'prefill J', 'decode J', 'unattributed J', 'ok requests', 'output tokens', 'J/token', 'quality'],
      r.Cycles.map(cyc), [false, true, true, true, true, true, true, true, true, true, false]),
    h('p', { class: 'hint' }, `Attribution: ${r.Method}. Systematic (sensor gain ±5%): ${r.Cycles.map((c) => '±' + num(c.SystematicJ)).join(', ')} J.`),
    h('figure', { class: 'chartbox' }, boxes([
      { label: 'J/token', values: r.Cycles.map((c) => c.JPerToken).filter((v): v is number => v !== null) },
    ], 'J/token', 'J/token over cycles'), h('figcaption', {}, 'J/token of each cycle: box over cycles with the cycles as dots.'))));

  // Statistics over cycles.
  const names = Object.keys(r.Summary).sort();
  root.appendChild(section('Over cycles',
    table('Mean ± 95% confidence interval (Student t) over cycles, with the coefficient of variation; the interval is over cycles, not the measurement error',
      ['metric', 'n', 'mean ± 95% CI', 'std', 'CV'], names.map((k) => [k, String(stat(k).N), withCI(stat(k).Mean, stat(k).CI95), num(stat(k).Std), stat(k).CV === null ? '—' : `${num((stat(k).CV as number) * 100, 2)}%`]),
      [false, true, true, true, true]),
    r.Flags.length ? h('p', { class: 'notice' }, `Run flags: ${r.Flags.join(', ')}`) : null,
    r.Outliers?.length ? h('p', { class: 'notice' }, r.Outliers.map((o) => `cycle ${o.Cycle} is an outlier in ${o.Metric} (robust z ${num(o.Z, 2)}; mean without it ${num(o.MeanWithout)})`).join('; ')) : null,
    r.Trends?.length ? h('p', { class: 'notice' }, r.Trends.map((t) => `${t.Metric} trends with run order (Mann–Kendall S ${t.S}, p ${num(t.P, 2)}): the interval does not cover it`).join('; ')) : null));

  // Latency.
  const lat = Object.entries(r.Latency ?? {}).sort();
  root.appendChild(section('Latency',
    table('Over every successful request of every cycle; bootstrap 95% intervals', ['', 'p50', 'p90', 'p99'],
      lat.map(([k, ps]) => [k, ...ps.map((p) => `${num(p.Value)} [${num(p.Low)}, ${num(p.High)}]`)]), [false, true, true, true]),
    h('p', { class: 'hint' }, `Token stamps: ${r.KernelStamped} of ${r.Chunks} chunks carry the kernel's receive time.`)));

  // Prefill / decode and per-request energy.
  const pre = stat('prefill_j'), dec = stat('decode_j');
  const split = h('figure', { class: 'chartbox' }, bars([
    { label: 'prefill', value: pre?.Mean ?? null, ci: pre?.CI95 ?? null, colour: '#E69F00' },
    { label: 'decode', value: dec?.Mean ?? null, ci: dec?.CI95 ?? null, colour: '#0072B2' },
  ], 'J per cycle', 'Prefill and decode energy per cycle'), h('figcaption', {}, 'Prefill and decode energy per cycle, mean ± 95% CI over cycles, split inside the batched run.'));
  const dist = r.RequestEnergy ? h('figure', { class: 'chartbox' }, histogram(r.RequestEnergy, 'J per request', 'Energy per request'),
    h('figcaption', {}, `Each request's attributed energy (${r.RequestEnergy.N} requests).`)) : h('p', {}, 'No per-request attribution (no power series).');
  root.appendChild(section('Prefill, decode and requests', split, dist));

  // Context.
  const ctxRows: (Node | string)[][] = [];
  if (r.Context) {
    ctxRows.push(['SM clock mean / min', `${num(r.Context.SMClockMeanMHz)} / ${num(r.Context.SMClockMinMHz)} MHz`]);
    ctxRows.push(['hottest temperature', `${num(r.Context.TempMaxC)} °C`]);
    ctxRows.push(['throttle reasons (bits)', r.Context.ThrottleReasons ? '0x' + r.Context.ThrottleReasons.toString(16) : 'none']);
    for (const [k, v] of Object.entries(r.Context.Derived ?? {}).sort()) ctxRows.push([k, num(v)]);
  }
  if (r.Server) ctxRows.push(['server: queue / prefill / decode p50', `${num(r.Server.QueueP50)} / ${num(r.Server.PrefillP50)} / ${num(r.Server.DecodeP50)} ms (${r.Server.Requests} requests)`]);
  for (const [d, w] of Object.entries(r.BaselineW ?? {})) ctxRows.push([`idle baseline ${d.slice(0, 16)}…`, `${num(w)} ± ${num(r.BaselineUncW?.[d] ?? null)} W`]);
  ctxRows.push(['CPU package / DRAM (RAPL, host; not in the GPU figures)', r.Node ? r.Node.Cycles.map((c) =>
    `${num(c.PackageJ)} / ${num(c.DRAMJ)} J ± ${num(c.UncJ)}${c.JPerToken !== null ? ` (${num(c.JPerToken)} J/token)` : ''}`).join('; ')
    : 'not collected on this host']);
  root.appendChild(section('What else was happening', table('Device state, the server\'s own metrics and the host', ['', 'value'], ctxRows)));

  // Verification.
  const rep = p.report;
  root.appendChild(section('Verification', rep ? table(`Report${rep.hash ? ' of bundle ' + rep.hash.slice(0, 16) + '…' : ''}`, ['check', 'result', 'detail'],
    rep.checks.map((c) => [c.name, h('span', { class: `status s-${c.status.replace('/', '')}` }, c.status), c.detail])) : h('p', {}, 'No report.')));

  // Configuration (set values first).
  let cfg: [string, string][] = [];
  try { cfg = flatten(JSON.parse(r.Config)); } catch { cfg = [['config', r.Config]]; }
  const set = cfg.filter(([, v]) => !unset.has(v)), rest = cfg.filter(([, v]) => unset.has(v));
  root.appendChild(section('Configuration', table('Values set first, then those left empty or zero', ['key', 'value'], [...set, ...rest].map(([k, v]) => [k, v])),
    h('p', {}, 'Downloads: ', h('a', { href: `/api/runs/${encodeURIComponent(id)}/dataset` }, 'the run as a Hugging Face dataset (Parquet, zip)'), ' · ',
      h('a', { href: `/api/runs/${encodeURIComponent(id)}/bundle` }, 'every raw event of the run (a lem bundle: recompute and check every figure)'), ' · ',
      h('a', { href: `/api/runs/${encodeURIComponent(id)}` }, 'the recomputed result (JSON)'), ' · ',
      h('a', { href: `/api/runs/${encodeURIComponent(id)}/timeline?points=10000` }, 'the timeline (JSON)'))));
}
