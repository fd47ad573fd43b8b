// Moderation (moderators): the queue of held submissions with their
// verification reports and a decision form each; the audit log. And a
// user's page: their submissions and how many passed.
import { h, clear, date, num, withCI } from './dom';
import { get, Published, Decision, Entry } from './api';
import { send, currentUser } from './account';
import { badges } from './leaderboard';

const label: Record<string, string> = { pending: 'awaiting a decision', approved: 'approved', rejected: 'rejected', changes_requested: 'changes requested' };

function reportTable(p: Published): HTMLElement {
  if (!p.report) return h('p', {}, 'no verification report');
  return h('table', { class: 'report' }, h('caption', {}, 'verification report'),
    h('thead', {}, h('tr', {}, ['check', 'result', 'detail'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, p.report.checks.map((c) => h('tr', {}, h('th', { scope: 'row' }, c.name), h('td', { class: `check-${c.status}` }, c.status), h('td', {}, c.detail)))));
}

function decisionsList(ds: Decision[] | undefined): HTMLElement | string {
  if (!ds || ds.length === 0) return '';
  return h('ul', { class: 'decisions' }, ds.map((d) => h('li', {}, `${date(d.at_ns)}: ${label[d.decision] ?? d.decision} by ${d.moderator}`, d.reason ? ` — “${d.reason}”` : '')));
}

export async function moderationPage(root: HTMLElement): Promise<void> {
  clear(root);
  document.title = 'Moderation — lem';
  root.appendChild(h('h1', {}, 'Moderation'));
  const me = currentUser();
  if (!me || (me.user.role !== 'moderator' && me.user.role !== 'admin')) {
    root.appendChild(h('p', {}, 'Moderators only: sign in with an account the operator made a moderator (lem web -moderators).'));
    return;
  }
  const q = await get<{ moderated: boolean; queue: Published[] }>('/api/moderation');
  root.appendChild(h('p', { class: 'lede' }, q.moderated
    ? 'Every verified upload waits here until a moderator approves it; only approved runs are on the public leaderboard. A rejection is final; “request changes” tells the submitter what to fix. Reasons are shown to the submitter.'
    : 'This platform does not hold uploads for moderation (lem web -moderate): verified uploads are public at once.'));
  const list = h('div', { id: 'queue' });
  root.appendChild(list);
  if (q.queue.length === 0) list.appendChild(h('p', { class: 'notice', role: 'status' }, 'Nothing awaits a decision.'));
  for (const p of q.queue) {
    const e = p.entry;
    const status = h('p', { role: 'status', class: 'decision-status' });
    const reason = h('textarea', { id: `reason-${e.run_id}`, rows: 2, maxlength: 2000, placeholder: 'reason (needed to reject or request changes; the submitter sees it)' }) as HTMLTextAreaElement;
    const decide = async (decision: string) => {
      clear(status);
      try {
        await send('POST', `/api/moderation/${encodeURIComponent(e.run_id)}`, { decision, reason: reason.value });
        await moderationPage(root);
      } catch (err) {
        status.appendChild(h('span', { class: 'error', role: 'alert' }, (err as Error).message));
      }
    };
    list.appendChild(h('section', { class: 'submission', 'data-run': e.run_id },
      h('h2', {}, h('a', { href: `/runs/${encodeURIComponent(e.run_id)}` }, `${e.model} · ${e.backend} · ${e.hardware}`)),
      h('p', { class: 'runmeta' }, badges(e), ` ${label[e.moderation ?? ''] ?? ''} · run ${e.run_id} · submitted by `,
        h('a', { href: `/users/${encodeURIComponent(e.submitter)}` }, e.submitter), ` · ${date(e.published_ns)} · J/token ${withCI(e.j_per_token, e.j_per_token_ci95)} · ${num(e.tokens_per_s)} tokens/s`),
      decisionsList(p.decisions),
      reportTable(p),
      h('label', { for: `reason-${e.run_id}` }, 'reason', reason),
      h('div', { class: 'decide' },
        h('button', { type: 'button', class: 'approve', onclick: () => decide('approved') }, 'Approve'),
        h('button', { type: 'button', class: 'changes', onclick: () => decide('changes_requested') }, 'Request changes'),
        h('button', { type: 'button', class: 'reject', onclick: () => decide('rejected') }, 'Reject')),
      status));
  }
  // Boards seen that match no standard profile: proposed, never guessed.
  interface Proposal { key: string; name: string; limit_w: number; runs: string[]; first_ns: number; last_ns: number; state: string; reason?: string; moderator?: string;
    profile?: { id: string; name: string; memory_gb: number; limit_w: number } }
  const props = await get<Proposal[]>('/api/moderation/profiles');
  root.appendChild(h('h2', {}, 'Proposed hardware profiles'));
  if (props.length === 0) root.appendChild(h('p', {}, 'Every board in the published runs matches a standard profile.'));
  for (const pr of props) {
    const reason = h('input', { type: 'search', id: `pr-${pr.key}`, placeholder: 'reason (required): the datasheet checked, or why not', size: 60 }) as HTMLInputElement;
    const status = h('span', { role: 'status' });
    // Accepting makes the board a profile here and now, with the
    // datasheet's figures (the platform checks them).
    const fid = h('input', { type: 'search', class: 'p-id', value: pr.name.toLowerCase().replace(/^nvidia\s+/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, ''), size: 14, 'aria-label': 'profile id' }) as HTMLInputElement;
    const fname = h('input', { type: 'search', class: 'p-name', value: pr.name, size: 30, 'aria-label': 'profile name' }) as HTMLInputElement;
    const fmem = h('input', { type: 'number', class: 'p-mem', min: 1, step: 'any', size: 6, 'aria-label': 'memory (GB)' }) as HTMLInputElement;
    const flim = h('input', { type: 'number', class: 'p-limit', min: 1, step: 'any', value: pr.limit_w || '', size: 6, 'aria-label': 'power limit (W)' }) as HTMLInputElement;
    const decide = async (decision: string) => {
      clear(status);
      const profile = decision === 'accepted' ? { id: fid.value.trim(), name: fname.value.trim(), memory_gb: Number(fmem.value), limit_w: Number(flim.value) } : undefined;
      try { await send('POST', `/api/moderation/profiles/${encodeURIComponent(pr.key)}`, { decision, reason: reason.value, profile }); await moderationPage(root); } catch (err) { status.appendChild(h('span', { class: 'error', role: 'alert' }, (err as Error).message)); }
    };
    root.appendChild(h('section', { class: 'submission proposal', 'data-key': pr.key },
      h('p', {}, h('strong', {}, pr.name), ` · power limit ${pr.limit_w ? `${num(pr.limit_w)} W` : 'unknown'} · ${pr.state}${pr.reason ? ` (${pr.moderator}: “${pr.reason}”)` : ''} · first seen ${date(pr.first_ns)} · runs: `,
        ...pr.runs.map((r) => h('a', { href: `/runs/${encodeURIComponent(r)}`, class: 'runlink' }, r))),
      pr.profile ? h('p', {}, `Profile ${pr.profile.id}: ${pr.profile.name}, ${num(pr.profile.memory_gb)} GB, ${num(pr.profile.limit_w)} W`) : '',
      pr.state === 'proposed' ? h('div', { class: 'decide' },
        h('p', { class: 'hint' }, 'To accept, give the profile from the board\'s datasheet: id, name, memory (GB), default power limit (W).'),
        h('label', {}, 'id ', fid), ' ', h('label', {}, 'name ', fname), ' ', h('label', {}, 'memory GB ', fmem), ' ', h('label', {}, 'limit W ', flim),
        h('br'), h('label', { for: `pr-${pr.key}` }, 'reason', reason),
        h('button', { type: 'button', class: 'approve', onclick: () => decide('accepted') }, 'Accept as a profile'),
        h('button', { type: 'button', class: 'reject', onclick: () => decide('dismissed') }, 'Dismiss'), status) : ''));
  }

  const log = await get<Decision[]>('/api/moderation/log');
  root.appendChild(h('h2', {}, 'Audit log'));
  root.appendChild(h('div', { class: 'tablewrap' }, h('table', { id: 'audit' }, h('caption', {}, `${log.length === 1 ? '1 decision' : `${log.length} decisions`}, from the platform's events`),
    h('thead', {}, h('tr', {}, ['when', 'run', 'decision', 'moderator', 'reason'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, log.slice().reverse().map((d) => h('tr', {}, h('td', {}, date(d.at_ns)), h('td', {}, d.run_id), h('td', {}, label[d.decision] ?? d.decision), h('td', {}, d.moderator), h('td', {}, d.reason ?? '')))))));
}

interface UserPage { user: string; login?: string; submissions: Published[]; verified: number; public: number; refused: number }

export async function userPage(root: HTMLElement, id: string): Promise<void> {
  clear(root);
  const u = await get<UserPage>(`/api/users/${encodeURIComponent(id)}`);
  document.title = `${u.login || u.user} — lem`;
  root.appendChild(h('h1', {}, u.login || u.user));
  root.appendChild(h('dl', { class: 'headline' }, ([['verified uploads', u.verified], ['on the leaderboard', u.public], ['refused by verification', u.refused]] as [string, number][])
    .map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, String(v))))));
  const row = (p: Published) => {
    const e: Entry = p.entry;
    return h('tr', {}, h('th', { scope: 'row' }, h('a', { href: `/runs/${encodeURIComponent(e.run_id)}` }, e.model)), h('td', {}, e.backend), h('td', {}, e.hardware),
      h('td', {}, withCI(e.j_per_token, e.j_per_token_ci95)), h('td', {}, badges(e)), h('td', {}, e.moderation ? (label[e.moderation] ?? e.moderation) : 'public'),
      h('td', {}, date(e.published_ns)));
  };
  root.appendChild(h('div', { class: 'tablewrap' }, h('table', { id: 'submissions' }, h('caption', {}, `${u.submissions.length} submissions shown`),
    h('thead', {}, h('tr', {}, ['model', 'backend', 'hardware', 'J/token', 'quality', 'state', 'published'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, u.submissions.map(row)))));
}
