// A small DOM builder. Text always goes in as text nodes (never HTML), so
// a model name or a configuration string holding markup renders inert.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | undefined | ((e: Event) => void)>;

export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

const svgNS = 'http://www.w3.org/2000/svg';

export function s(tag: string, attrs: Record<string, string | number> = {}, ...children: (Node | string)[]): SVGElement {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

// num formats a figure to n significant digits; null is unknown: "—".
export function num(v: number | null | undefined, n = 3): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10 ** n) return Math.round(v).toLocaleString('en');
  return Number(v.toPrecision(n)).toString();
}

// params formats a parameter count: 3.30 M, 8.03 B; — when unknown.
export function params(v: number | null | undefined): string {
  if (v === null || v === undefined || !(v > 0)) return '—';
  for (const [unit, div] of [['T', 1e12], ['B', 1e9], ['M', 1e6], ['K', 1e3]] as const) {
    if (v >= div) return `${Number((v / div).toPrecision(3))} ${unit}`;
  }
  return String(Math.round(v));
}

// withCI formats a mean and its 95% half-width at the CI's precision.
export function withCI(m: number | null | undefined, ci: number | null | undefined): string {
  if (m === null || m === undefined) return '—';
  if (ci === null || ci === undefined || !Number.isFinite(ci)) return num(m);
  const digits = ci > 0 ? Math.max(0, 1 - Math.floor(Math.log10(ci))) : 3;
  const d = Math.min(digits, 6);
  return `${m.toFixed(d)} ± ${ci.toFixed(d)}`;
}

export function date(ns: number): string {
  if (!ns) return '—';
  return new Date(ns / 1e6).toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

export function clear(el: HTMLElement): HTMLElement {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// A categorical palette distinguishable for colour-blind readers (Okabe–Ito).
export const palette = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];

export function colourOf(keys: string[], k: string): string {
  const i = keys.indexOf(k);
  return palette[(i < 0 ? 0 : i) % palette.length];
}
