// Remote execution: the config builder (an experiment file checked by the
// platform as it is typed, with the cost estimate), the list of jobs and
// workers, and a job's page with its live progress over WebSocket.
import { h, clear, date, num } from './dom';
import { get } from './api';
import { send, currentUser } from './account';
import { schemaForm, toYAML, prune, type Doc, type Schema } from './schemaform';

export interface Estimate {
  duration_s: [number, number]; gpus: number; gpu_hours: [number, number]; energy_kwh: [number, number]; co2_kg: [number, number];
  cost: [number, number] | null; currency?: string; basis: string;
}
export interface Job {
  id: string; user: string; profile: string; experiment: string; config: string; state: string; cancel_requested?: boolean;
  estimate: Estimate; worker?: string; deliveries?: number; run_ids?: string[]; error?: string; log_tail?: string;
  created_ns: number; queued_ns?: number; started_ns?: number; ended_ns?: number; actual_s?: number; actual_energy_j?: number | null; energy_unknown?: boolean;
  waiting?: string;
}
interface Worker { id: string; host: string; profile: string; gpus: number; job?: string; version: string; seen_ns: number }
interface Progress {
  seq: number; phase: string; run?: string; cycle: number; cycles: number; done: number; total: number; failed: number;
  power_w?: number; chunks_per_s?: number; eta_s?: number; elapsed_s: number; state?: string; message?: string; end?: boolean; log_tail?: string;
}
interface Profile { id: string; name: string }

function dur(s: number): string {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function estimateView(e: Estimate): HTMLElement {
  const rows: [string, string][] = [
    ['duration', `${dur(e.duration_s[0])} – ${dur(e.duration_s[1])}`],
    ['GPU hours', `${num(e.gpu_hours[0])} – ${num(e.gpu_hours[1])} (${e.gpus} GPU${e.gpus === 1 ? '' : 's'})`],
    ['energy', `${num(e.energy_kwh[0])} – ${num(e.energy_kwh[1])} kWh`],
    ['CO₂e', `${num(e.co2_kg[0])} – ${num(e.co2_kg[1])} kg`],
    ['cost', e.cost ? `${num(e.cost[0])} – ${num(e.cost[1])} ${e.currency ?? ''}` : 'no price set on this platform'],
  ];
  return h('div', { class: 'estimate' }, h('dl', { class: 'headline' }, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
    h('p', { class: 'hint' }, `Basis: ${e.basis}`));
}

const stateLabel: Record<string, string> = {
  awaiting_confirmation: 'awaiting your confirmation', queued: 'queued', running: 'running', succeeded: 'succeeded', failed: 'failed', canceled: 'canceled',
};

export async function jobsPage(root: HTMLElement): Promise<void> {
  clear(root);
  document.title = 'Jobs — lem';
  root.appendChild(h('h1', {}, 'Run an experiment on a GPU worker'));
  if (!currentUser()) {
    root.appendChild(h('p', {}, 'Sign in to submit jobs (top right).'));
    return;
  }
  const [t, sc] = await Promise.all([get<{ templates: { name: string; yaml: string }[]; profiles: Profile[] }>('/api/jobs/templates'),
    get<{ schema: Schema; host_chosen: string[] }>('/api/jobs/schema')]);
  root.appendChild(h('p', { class: 'lede' }, 'Fill in the form or write the experiment file (YAML) beside it — each follows the other. The platform checks it as you type with the rules of lem check-config and of remote execution (no commands, environment, paths or endpoints of your own: the worker chooses its GPUs and ports), and estimates what it will cost. It is queued for the workers of the chosen hardware profile only when you confirm.'));
  const editor = h('textarea', { id: 'job-yaml', rows: 24, spellcheck: 'false', 'aria-label': 'experiment file (YAML)' }) as HTMLTextAreaElement;
  // The form is generated from the experiment schema; the YAML is the
  // form's document written out, and typing YAML redraws the form from
  // the platform's reading of it.
  let doc: Doc = {};
  const formBox = h('div', { id: 'job-form' });
  const drawForm = () => formBox.replaceChildren(schemaForm(sc.schema, doc, { hidden: sc.host_chosen, onChange: (d) => {
    doc = d;
    editor.value = toYAML(prune(doc));
    fromYAML = false;
    schedule();
  } }));
  let fromYAML = false;
  const profile = h('select', { id: 'job-profile' }, t.profiles.map((p) => h('option', { value: p.id }, `${p.id} — ${p.name}`))) as HTMLSelectElement;
  const template = h('select', { id: 'job-template' }, h('option', { value: '' }, 'start from an example…'),
    t.templates.map((x) => h('option', { value: x.name }, x.name))) as HTMLSelectElement;
  const checks = h('div', { id: 'job-check', role: 'status', 'aria-live': 'polite' });
  const submit = h('button', { type: 'button', id: 'job-submit', disabled: true }, 'Submit for an estimate') as HTMLButtonElement;
  const result = h('div', { id: 'job-result' });
  template.addEventListener('change', () => {
    const x = t.templates.find((y) => y.name === template.value);
    if (x) { editor.value = x.yaml; fromYAML = true; schedule(); }
  });
  let timer = 0;
  let seq = 0;
  const check = async () => {
    const mine = ++seq;
    const r = await fetch('/api/jobs/check', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': currentUser()?.csrf ?? '' },
      body: JSON.stringify({ profile: profile.value, experiment: editor.value }) });
    const body = await r.json().catch(() => null);
    if (mine !== seq) return; // a newer check is under way
    if (fromYAML && body?.doc) { doc = body.doc as Doc; drawForm(); }
    clear(checks);
    if (r.ok) {
      checks.appendChild(h('p', { class: 'ok-note' }, 'No problems. Estimate:'));
      checks.appendChild(estimateView(body.estimate));
      submit.disabled = false;
    } else {
      const problems: string[] = body?.problems ?? [body?.error ?? `${r.status}`];
      checks.appendChild(h('ul', { class: 'problems' }, problems.map((p) => h('li', {}, p))));
      submit.disabled = true;
    }
  };
  const schedule = () => { window.clearTimeout(timer); timer = window.setTimeout(check, 300); };
  editor.addEventListener('input', () => { fromYAML = true; schedule(); });
  profile.addEventListener('change', schedule);
  submit.addEventListener('click', async () => {
    clear(result);
    try {
      const job = await send<Job>('POST', '/api/jobs', { profile: profile.value, experiment: editor.value });
      result.appendChild(h('div', { class: 'notice' }, h('p', {}, `Job ${job.id} awaits your confirmation of this estimate:`), estimateView(job.estimate),
        h('button', { type: 'button', id: 'job-confirm', onclick: async () => {
          await send('POST', `/api/jobs/${encodeURIComponent(job.id)}/confirm`);
          history.pushState(null, '', `/jobs/${encodeURIComponent(job.id)}`);
          dispatchEvent(new PopStateEvent('popstate'));
        } }, 'Confirm and queue')));
    } catch (e) {
      result.appendChild(h('p', { class: 'error', role: 'alert' }, (e as Error).message));
    }
  });
  root.appendChild(h('div', { class: 'builder' },
    h('div', { class: 'filters' }, h('label', { for: 'job-profile' }, 'hardware profile', profile), h('label', { for: 'job-template' }, 'example', template)),
    h('div', { class: 'builder-panes' },
      h('section', { 'aria-label': 'form' }, h('h2', {}, 'Settings'), h('p', { class: 'hint' }, 'Empty fields take lem\'s defaults. Generated from the experiment schema (',
        h('a', { href: '/experiment.schema.json' }, 'experiment.schema.json'), '; editors validate YAML with it).'), formBox),
      h('section', { 'aria-label': 'YAML' }, h('h2', {}, h('label', { for: 'job-yaml' }, 'Experiment file (YAML)')), editor)),
    checks, submit, result));
  drawForm();

  const list = await get<{ jobs: Job[]; workers: Worker[] }>('/api/jobs');
  root.appendChild(h('h2', {}, 'Your jobs'));
  root.appendChild(h('div', { class: 'tablewrap' }, h('table', { id: 'jobs' }, h('caption', {}, `${list.jobs.length} jobs`),
    h('thead', {}, h('tr', {}, ['job', 'experiment', 'profile', 'state', 'submitted'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, list.jobs.map((j) => h('tr', {}, h('th', { scope: 'row' }, h('a', { href: `/jobs/${encodeURIComponent(j.id)}` }, j.id)),
      h('td', {}, j.experiment), h('td', {}, j.profile), h('td', {}, stateLabel[j.state] ?? j.state), h('td', {}, date(j.created_ns))))))));
  const role = currentUser()?.user.role;
  if (role === 'admin' || role === 'moderator') {
    // Operators see how far the estimates were from the actual durations.
    const all = await get<{ jobs: Job[]; estimator?: { jobs: number; actual_over_estimate_median?: number; within_range?: number } }>('/api/jobs?all=1');
    const est = all.estimator;
    root.appendChild(h('h2', {}, 'Estimator (all users\' finished jobs)'));
    root.appendChild(h('p', { id: 'estimator' }, !est || est.jobs === 0 ? 'No finished job to compare its estimate with yet.'
      : `${est.jobs} job(s): actual duration ÷ the estimate's middle, median ${num(est.actual_over_estimate_median ?? NaN)}; ${est.within_range ?? 0} of ${est.jobs} inside the estimated range.`));
  }
  root.appendChild(h('h2', {}, 'Workers connected'));
  root.appendChild(list.workers.length === 0 ? h('p', {}, 'No worker is connected: jobs wait until one of their profile is (lem worker).')
    : h('div', { class: 'tablewrap' }, h('table', { id: 'workers' }, h('thead', {}, h('tr', {}, ['worker', 'profile', 'GPUs', 'running', 'seen'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, list.workers.map((w) => h('tr', {}, h('th', { scope: 'row' }, w.id), h('td', {}, w.profile), h('td', {}, String(w.gpus)), h('td', {}, w.job ?? 'idle'), h('td', {}, date(w.seen_ns))))))));
}

export async function jobPage(root: HTMLElement, id: string): Promise<void> {
  clear(root);
  let job = await get<Job>(`/api/jobs/${encodeURIComponent(id)}`);
  document.title = `Job ${job.experiment} — lem`;
  root.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '/jobs' }, '← jobs')));
  root.appendChild(h('h1', {}, `${job.experiment} on ${job.profile}`));
  const state = h('p', { id: 'job-state', class: 'runmeta', role: 'status' });
  const bar = h('progress', { id: 'job-progress', max: 1, value: 0 }) as HTMLProgressElement;
  const live = h('dl', { class: 'headline', id: 'job-live' });
  const runs = h('div', { id: 'job-runs' });
  const cancel = h('button', { type: 'button', id: 'job-cancel', onclick: async () => {
    try { job = await send<Job>('POST', `/api/jobs/${encodeURIComponent(id)}/cancel`); show(); } catch (e) { state.textContent = (e as Error).message; }
  } }, 'Cancel');
  const show = () => {
    clear(state).appendChild(document.createTextNode(`${stateLabel[job.state] ?? job.state}${job.cancel_requested && job.state === 'running' ? ' (stopping at your request)' : ''}` +
      `${job.worker ? ` · worker ${job.worker}` : ''}${job.deliveries && job.deliveries > 1 ? ` · delivery ${job.deliveries}` : ''}${job.waiting ? ` · ${job.waiting}` : ''}`));
    (cancel as HTMLButtonElement).disabled = ['succeeded', 'failed', 'canceled'].includes(job.state);
    clear(runs);
    if (job.run_ids?.length) runs.appendChild(h('p', {}, 'Runs: ', ...job.run_ids.map((r) => h('a', { href: `/runs/${encodeURIComponent(r)}`, class: 'runlink' }, r))));
    if (job.error) runs.appendChild(h('p', { class: 'error' }, job.error));
    if (job.actual_s) runs.appendChild(h('p', {}, `Took ${dur(job.actual_s)} (estimated ${dur(job.estimate.duration_s[0])} – ${dur(job.estimate.duration_s[1])})` +
      (job.energy_unknown ? '; GPU energy of its cycles unknown (a cycle has no power data)' : job.actual_energy_j ? `; GPU energy of its measured cycles ${num(job.actual_energy_j / 3.6e6)} kWh (the estimate, ${num(job.estimate.energy_kwh[0])} – ${num(job.estimate.energy_kwh[1])} kWh, covers the whole job)` : '')));
    if (job.log_tail) runs.appendChild(h('details', {}, h('summary', {}, 'log (last lines)'), h('pre', {}, job.log_tail)));
  };
  show();
  root.appendChild(state);
  root.appendChild(h('div', {}, bar, ' ', cancel));
  root.appendChild(live);
  root.appendChild(runs);
  root.appendChild(h('h2', {}, 'Estimate'));
  root.appendChild(estimateView(job.estimate));
  root.appendChild(h('details', {}, h('summary', {}, 'experiment file'), h('pre', {}, job.config)));

  // Live progress: resume after the last sequence seen when the socket
  // drops; refresh the job's record on its last update.
  let after = 0;
  const connect = () => {
    if (!document.body.contains(root) || ['succeeded', 'failed', 'canceled'].includes(job.state) && after > 0) return;
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/jobs/${encodeURIComponent(id)}/live?after=${after}`);
    ws.onmessage = async (m) => {
      const p = JSON.parse(m.data) as Progress;
      after = p.seq;
      if (p.end) { // the job's last word: its state; the panel keeps the last progress
        job = await get<Job>(`/api/jobs/${encodeURIComponent(id)}`);
        show();
        return;
      }
      if (p.total > 0) { bar.max = p.total * Math.max(p.cycles, 1); bar.value = p.cycle * p.total + p.done; }
      const items: [string, string][] = [['phase', p.run ? `${p.phase} · ${p.run}` : p.phase], ['cycle', p.cycles ? `${p.cycle + 1} of ${p.cycles}` : '—'],
        ['requests', p.total ? `${p.done} / ${p.total}${p.failed ? ` (${p.failed} failed)` : ''}` : '—'], ['power', p.power_w ? `${num(p.power_w)} W` : '—'],
        ['chunks/s', p.chunks_per_s !== undefined ? num(p.chunks_per_s) : '—'], ['elapsed', dur(p.elapsed_s)], ['ETA', p.eta_s !== undefined ? dur(p.eta_s) : '—']];
      clear(live);
      for (const [k, v] of items) live.appendChild(h('div', {}, h('dt', {}, k), h('dd', {}, v)));
      if (p.end || p.state) {
        job = await get<Job>(`/api/jobs/${encodeURIComponent(id)}`);
        show();
      }
    };
    ws.onclose = () => { window.setTimeout(async () => { job = await get<Job>(`/api/jobs/${encodeURIComponent(id)}`).catch(() => job); show(); if (!['succeeded', 'failed', 'canceled'].includes(job.state)) connect(); }, 1000); };
  };
  connect();
}


