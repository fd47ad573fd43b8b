// Sign-in state in the header, and the API tokens page: a token's secret
// is shown once, when it is made.
import { h, clear, date } from './dom';
import { APIError } from './api';

export interface Me { user: { id: string; login: string; name: string; role: string; provider: string }; csrf?: string; jobs?: boolean }
interface Provider { id: string; name: string; url: string }
interface Token { hash: string; name: string; user: string; scopes: string[]; created_ns: number; expires_ns: number; revoked: boolean }

let me: Me | null = null;

export function currentUser(): Me | null { return me; }

export async function loadMe(): Promise<Me | null> {
  const r = await fetch('/api/me', { headers: { Accept: 'application/json' } });
  const body = r.ok ? ((await r.json()) as Me) : null;
  me = body && body.user ? body : null;
  return me;
}

// send makes a state-changing request with the session's CSRF token.
export async function send<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(path, {
    method, headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRF-Token': me?.csrf ?? '' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const out = await r.json().catch(() => null);
  if (!r.ok) throw new APIError((out && out.error) || `${r.status} ${r.statusText}`);
  return out as T;
}

export async function accountBox(): Promise<HTMLElement> {
  const box = h('div', { class: 'account' });
  const cur = await loadMe();
  if (cur) {
    box.appendChild(h('span', { class: 'who', title: `${cur.user.id} (${cur.user.role})` }, `${cur.user.name} · ${cur.user.role}`));
    if (cur.user.role === 'moderator' || cur.user.role === 'admin') box.appendChild(h('a', { href: '/moderation', id: 'nav-moderation' }, 'Moderation'));
    if (cur.jobs) box.appendChild(h('a', { href: '/jobs', id: 'nav-jobs' }, 'Jobs')); // only where the platform runs jobs
    box.appendChild(h('a', { href: `/users/${encodeURIComponent(cur.user.id)}` }, 'My runs'));
    box.appendChild(h('a', { href: '/tokens' }, 'API tokens'));
    box.appendChild(h('button', { type: 'button', id: 'signout', onclick: async () => { await send('POST', '/auth/logout'); location.assign('/'); } }, 'Sign out'));
    return box;
  }
  const ps = await fetch('/auth/providers').then((r) => r.json() as Promise<Provider[]>).catch(() => [] as Provider[]);
  const ret = encodeURIComponent(location.pathname + location.search);
  for (const p of ps) box.appendChild(h('a', { class: 'signin', href: `${p.url}?return=${ret}` }, `Sign in with ${p.name}`));
  return box;
}

export async function tokensPage(root: HTMLElement): Promise<void> {
  clear(root);
  document.title = 'API tokens — lem';
  root.appendChild(h('h1', {}, 'API tokens'));
  if (!me) {
    root.appendChild(h('p', {}, 'Sign in to make API tokens (top right).'));
    return;
  }
  root.appendChild(h('p', { class: 'lede' }, 'A token lets lem upload runs in your name (lem upload -token-file FILE, or LEM_TOKEN). Its secret is shown once; the platform keeps only its SHA-256.'));
  const out = h('div', { id: 'token-result', role: 'status' });
  const scopes = ['upload', 'read'].concat(me.user.role === 'admin' ? ['admin'] : []);
  const form = h('form', { class: 'filters', id: 'token-form' },
    h('label', { for: 't-name' }, 'name', h('input', { id: 't-name', type: 'search', required: true, maxlength: 100, placeholder: 'e.g. lab GPU box' })),
    ...scopes.map((s) => h('label', { for: `t-${s}`, class: 'check' }, h('input', { type: 'checkbox', id: `t-${s}`, value: s, checked: s === 'upload' }), s)),
    h('label', { for: 't-days' }, 'expires after (days, 0 = never)', h('input', { id: 't-days', type: 'search', value: '90', inputmode: 'numeric' })),
    h('button', { type: 'submit' }, 'Make token'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    try {
      const chosen = scopes.filter((s) => (document.getElementById(`t-${s}`) as HTMLInputElement).checked);
      const res = await send<{ secret: string; token: Token }>('POST', '/api/tokens', {
        name: (document.getElementById('t-name') as HTMLInputElement).value, scopes: chosen,
        expires_days: parseInt((document.getElementById('t-days') as HTMLInputElement).value || '0', 10),
      });
      out.appendChild(h('p', { class: 'notice' }, 'Copy it now — it will not be shown again: ', h('code', { id: 'token-secret' }, res.secret)));
      await list();
    } catch (err) {
      out.appendChild(h('p', { class: 'error', role: 'alert' }, (err as Error).message));
    }
  });
  root.appendChild(form);
  root.appendChild(out);
  const tableBox = h('div', { class: 'tablewrap' });
  root.appendChild(tableBox);
  const list = async () => {
    const ts = await fetch('/api/tokens').then((r) => r.json() as Promise<Token[]>);
    clear(tableBox).appendChild(h('table', { id: 'tokens' }, h('caption', {}, ts.length === 1 ? '1 token' : `${ts.length} tokens`),
      h('thead', {}, h('tr', {}, ['name', 'scopes', 'made', 'expires', 'state', ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, ts.map((t) => h('tr', {}, h('th', { scope: 'row' }, t.name), h('td', {}, t.scopes.join(', ')), h('td', {}, date(t.created_ns)),
        h('td', {}, t.expires_ns ? date(t.expires_ns) : 'never'), h('td', {}, t.revoked ? 'revoked' : 'active'),
        h('td', {}, t.revoked ? '' : h('button', { type: 'button', onclick: async () => { await send('DELETE', `/api/tokens/${t.hash}`); await list(); } }, 'Revoke')))))));
  };
  await list();
  await notificationsSection(root);
}

interface Hook { id: string; url: string; secret?: string; created_ns: number }
interface Attempt { notification: string; type: string; attempt: number; at_ns: number; status?: number; ok: boolean; error?: string; gave_up?: boolean }

// notificationsSection: the user's webhooks (secret shown once, a delivery
// log each) and e-mail, where the platform has them.
async function notificationsSection(root: HTMLElement): Promise<void> {
  const first = await fetch('/api/notifications').then((x) => x.json() as Promise<{ available: boolean }>).catch(() => ({ available: false }));
  if (!first.available) return; // this platform sends none
  const box = h('section', { id: 'notifications' });
  root.appendChild(box);
  const render = async () => {
    const n = await fetch('/api/notifications').then((x) => x.json() as Promise<{ webhooks: Hook[]; email: string; email_available: boolean; events: string[] }>);
    clear(box);
    box.appendChild(h('h2', {}, 'Notifications'));
    box.appendChild(h('p', { class: 'lede' }, `You hear of: ${n.events.join(', ')}. Each webhook delivery is a JSON POST signed with the hook's secret (X-Lem-Signature: sha256=HMAC-SHA256 of the body), retried with doubling delays when your endpoint fails.`));
    const out = h('div', { id: 'hook-result', role: 'status' });
    const url = h('input', { id: 'hook-url', type: 'search', placeholder: 'https://example.org/lem-hook' }) as HTMLInputElement;
    const form = h('form', { class: 'filters', id: 'hook-form' }, h('label', { for: 'hook-url' }, 'webhook URL', url), h('button', { type: 'submit' }, 'Add webhook'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear(out);
      try {
        const hk = await send<Hook>('POST', '/api/notifications/webhooks', { url: url.value });
        await render();
        document.getElementById('hook-result')?.appendChild(h('p', { class: 'notice' }, 'Its secret, shown once: ', h('code', { id: 'hook-secret' }, hk.secret ?? '')));
      } catch (err) {
        out.appendChild(h('p', { class: 'error', role: 'alert' }, (err as Error).message));
      }
    });
    box.appendChild(form);
    box.appendChild(out);
    const logBox = h('div', { id: 'hook-log' });
    const showLog = async (id: string, label: string) => {
      const l = await fetch(`/api/notifications/deliveries/${encodeURIComponent(id)}`).then((x) => x.json() as Promise<Attempt[]>);
      clear(logBox).appendChild(h('table', {}, h('caption', {}, `Deliveries to ${label} (last ${l.length})`),
        h('thead', {}, h('tr', {}, ['when', 'event', 'try', 'result'].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, l.slice().reverse().map((a) => h('tr', {}, h('td', {}, date(a.at_ns)), h('td', {}, a.type), h('td', {}, String(a.attempt)),
          h('td', { class: a.ok ? 'check-pass' : 'check-fail' }, a.ok ? `delivered${a.status ? ` (${a.status})` : ''}` : `${a.error ?? 'failed'}${a.gave_up ? ' — gave up' : ''}`))))));
    };
    if (n.webhooks.length > 0) {
      box.appendChild(h('table', { id: 'hooks' }, h('thead', {}, h('tr', {}, ['webhook', 'added', '', ''].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, n.webhooks.map((w) => h('tr', {}, h('th', { scope: 'row' }, w.url), h('td', {}, date(w.created_ns)),
          h('td', {}, h('button', { type: 'button', onclick: () => showLog(w.id, w.url) }, 'Deliveries')),
          h('td', {}, h('button', { type: 'button', onclick: async () => { await send('DELETE', `/api/notifications/webhooks/${encodeURIComponent(w.id)}`); await render(); } }, 'Remove')))))));
    }
    if (n.email_available || n.email) {
      const cb = h('input', { type: 'checkbox', id: 'email-on', checked: n.email !== '' }) as HTMLInputElement;
      cb.addEventListener('change', async () => { await send('PUT', '/api/notifications/email', { enabled: cb.checked }); await render(); });
      box.appendChild(h('p', {}, h('label', { for: 'email-on', class: 'check' }, cb, ` e-mail me${n.email ? ` (${n.email})` : ''}`),
        n.email ? h('button', { type: 'button', onclick: () => showLog(`email:${me?.user.id}`, n.email) }, 'Deliveries') : ''));
    }
    box.appendChild(logBox);
  };
  await render();
}
