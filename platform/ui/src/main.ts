// The platform's single-page front end: a client router over two pages.
import './style.css';
import { h, clear } from './dom';
import { leaderboard } from './leaderboard';
import { runPage } from './run';
import { accountBox, tokensPage } from './account';
import { comparePage } from './compare';
import { moderationPage, userPage } from './moderation';
import { jobsPage, jobPage } from './jobs';

const app = document.getElementById('app') as HTMLElement;

export function navigate(url: string): void {
  history.pushState(null, '', url);
  route();
}

async function route(): Promise<void> {
  const main = h('main', { id: 'main' });
  const header = h('header', { class: 'top' }, h('a', { href: '/', class: 'brand' }, 'lem'),
    h('span', { class: 'tag' }, 'LLM inference energy, recomputed from raw telemetry'),
    h('nav', {}, h('a', { href: '/' }, 'Leaderboard'), h('a', { href: '/api/openapi.json' }, 'API')));
  clear(app).appendChild(header);
  app.appendChild(main);
  header.appendChild(await accountBox());
  const path = location.pathname;
  try {
    const m = path.match(/^\/runs\/([^/]+)$/);
    const u = path.match(/^\/users\/([^/]+)$/);
    const j = path.match(/^\/jobs\/([^/]+)$/);
    if (m) await runPage(main, decodeURIComponent(m[1]));
    else if (u) await userPage(main, decodeURIComponent(u[1]));
    else if (j) await jobPage(main, decodeURIComponent(j[1]));
    else if (path === '/jobs') await jobsPage(main);
    else if (path === '/moderation') await moderationPage(main);
    else if (path === '/') await leaderboard(main, new URLSearchParams(location.search));
    else if (path === '/tokens') await tokensPage(main);
    else if (path === '/compare') await comparePage(main, new URLSearchParams(location.search));
    else main.appendChild(h('p', {}, 'No such page. ', h('a', { href: '/' }, 'Go to the leaderboard.')));
  } catch (e) {
    main.appendChild(h('p', { class: 'error', role: 'alert' }, `Could not load this page: ${(e as Error).message}`));
  }
}

// Internal links navigate without reloading.
document.addEventListener('click', (e) => {
  const a = (e.target as HTMLElement).closest('a');
  if (!a || a.target || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/auth/')) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', route);
route();
