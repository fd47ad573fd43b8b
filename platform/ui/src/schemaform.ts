// A form generated from a JSON Schema (lem's experiment schema, made from
// its Go types), editing a plain JSON document, and the YAML that document
// is written as. The form knows nothing of experiments: every field, its
// type, its choices and its nesting come from the schema, so a setting
// added to lem appears here without a change to this file.
import { h } from './dom';

export type Doc = { [k: string]: unknown };
export interface Schema {
  type?: string; properties?: Record<string, Schema>; items?: Schema; additionalProperties?: boolean | Schema;
  enum?: string[]; examples?: string[]; description?: string; pattern?: string; $ref?: string; $defs?: Record<string, Schema>;
}

// The top-level keys first in this order (the schema's own are sorted by
// name); the rest follow.
const firstKeys = ['experiment', 'backend', 'workload', 'measurement', 'collectors', 'sweep'];

function ordered(keys: string[]): string[] {
  return [...firstKeys.filter((k) => keys.includes(k)), ...keys.filter((k) => !firstKeys.includes(k)).sort()];
}

function resolve(s: Schema, root: Schema): Schema {
  let n = s;
  for (let i = 0; n.$ref && i < 20; i++) n = root.$defs?.[n.$ref.replace('#/$defs/', '')] ?? {};
  return n;
}

function isObject(v: unknown): v is Doc {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// prune removes empty objects and arrays left by cleared fields.
export function prune(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(prune);
  if (!isObject(v)) return v;
  const out: Doc = {};
  for (const [k, x] of Object.entries(v)) {
    const p = prune(x);
    if (p === undefined || (isObject(p) && Object.keys(p).length === 0)) continue;
    out[k] = p;
  }
  return out;
}

// --- YAML ---

// A string is written bare when YAML would read it back as that string:
// no punctuation YAML gives meaning to, not a number, not a boolean or null.
const plain = /^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$/;
const reserved = /^(true|false|yes|no|on|off|null|~|y|n|\.inf|\.nan)$/i;

function scalar(v: unknown): string {
  if (typeof v === 'string') return plain.test(v) && !reserved.test(v) && Number.isNaN(Number(v)) ? v : JSON.stringify(v);
  if (v === null || v === undefined) return 'null';
  return String(v);
}

// toYAML writes a document as block YAML: maps and lists of maps as
// blocks, lists of scalars inline; strings quoted when they would read as
// something else.
export function toYAML(v: unknown, indent = '', top = true): string {
  if (isObject(v)) {
    const keys = top ? ordered(Object.keys(v)) : Object.keys(v);
    return keys.map((k) => {
      const x = v[k];
      if (isObject(x)) return Object.keys(x).length ? `${indent}${k}:\n${toYAML(x, indent + '  ', false)}` : `${indent}${k}: {}\n`;
      if (Array.isArray(x) && x.some((e) => isObject(e) || Array.isArray(e))) return `${indent}${k}:\n${toYAML(x, indent, false)}`;
      return `${indent}${k}: ${Array.isArray(x) ? `[${x.map(scalar).join(', ')}]` : scalar(x)}\n`;
    }).join('');
  }
  if (Array.isArray(v)) {
    return v.map((e) => {
      if (!isObject(e)) return `${indent}- ${scalar(e)}\n`;
      const body = toYAML(e, indent + '  ', false);
      return Object.keys(e).length ? `${indent}- ${body.slice(indent.length + 2)}` : `${indent}- {}\n`;
    }).join('');
  }
  return scalar(v) + '\n';
}

// --- the form ---

export interface FormOptions {
  hidden: string[]; // dotted paths left out (array levels are not named: sweep.workload.dataset.path)
  onChange: (doc: Doc) => void;
}

// schemaForm renders doc's fields from the schema; every change rewrites
// doc in place and calls onChange with it.
export function schemaForm(root: Schema, doc: Doc, opt: FormOptions): HTMLElement {
  const top = resolve(root, root);
  const changed = () => opt.onChange(doc);
  return h('div', { class: 'schemaform' }, objectFields(top, root, doc, '', opt, changed, 0));
}

function label(path: string): string {
  const k = path.split('.').pop() ?? path;
  return k.replace(/_/g, ' ');
}

function objectFields(s: Schema, root: Schema, obj: Doc, path: string, opt: FormOptions, changed: () => void, depth: number): HTMLElement[] {
  const props = s.properties ?? {};
  const out: HTMLElement[] = [];
  for (const k of depth === 0 ? ordered(Object.keys(props)) : Object.keys(props).sort()) {
    const p = path ? `${path}.${k}` : k;
    if (opt.hidden.includes(p)) continue;
    const f = field(resolve(props[k], root), root, obj, k, p, opt, changed, depth);
    if (f) out.push(f);
  }
  return out;
}

function field(s: Schema, root: Schema, parent: Doc, key: string, path: string, opt: FormOptions, changed: () => void, depth: number): HTMLElement | null {
  const id = 'f-' + path.replace(/[^A-Za-z0-9_-]/g, '-');
  const set = (v: unknown) => {
    if (v === undefined || v === '') delete parent[key];
    else parent[key] = v;
    changed();
  };
  const cur = parent[key];
  const title = s.description ?? '';
  const row = (input: HTMLElement, hint = '') => h('div', { class: 'field' }, h('label', { for: id, title }, label(path)), input, hint ? h('span', { class: 'hint' }, hint) : null);

  if (s.type === 'object' && s.properties) {
    // A nested block: open where it holds values or at the top level.
    const sub: Doc = isObject(cur) ? cur : {};
    const inner = () => { if (!isObject(parent[key])) parent[key] = sub; changed(); };
    const open = depth === 0 || Object.keys(sub).length > 0;
    return h('details', { class: `block depth${depth}`, open, 'data-path': path }, h('summary', {}, label(path)),
      h('div', { class: 'fields' }, objectFields(s, root, sub, path, opt, inner, depth + 1)));
  }
  if (s.type === 'object') return null; // a free-form map (environment variables): not a form's business
  if (s.type === 'array') {
    const item = resolve(s.items ?? {}, root);
    if (item.type === 'object') return listOfObjects(item, root, parent, key, path, opt, changed, depth);
    const input = h('input', { id, type: 'text', 'data-path': path, value: Array.isArray(cur) ? cur.join(', ') : '',
      placeholder: item.type === 'integer' ? 'e.g. 0, 1' : 'comma-separated' }) as HTMLInputElement;
    input.addEventListener('change', () => {
      const parts = input.value.split(',').map((x) => x.trim()).filter((x) => x !== '');
      set(parts.length === 0 ? undefined : item.type === 'integer' || item.type === 'number' ? parts.map(Number) : parts);
    });
    return row(input, 'comma-separated');
  }
  if (s.enum || s.type === 'boolean') {
    const choices = s.enum ?? ['true', 'false'];
    const sel = h('select', { id, 'data-path': path }, h('option', { value: '' }, '(default)'),
      choices.map((c) => h('option', { value: c, selected: String(cur) === c }, c))) as HTMLSelectElement;
    sel.addEventListener('change', () => set(sel.value === '' ? undefined : s.type === 'boolean' ? sel.value === 'true' : sel.value));
    return row(sel);
  }
  if (s.type === 'integer' || s.type === 'number') {
    const input = h('input', { id, type: 'number', step: s.type === 'integer' ? '1' : 'any', 'data-path': path, value: typeof cur === 'number' ? cur : '' }) as HTMLInputElement;
    input.addEventListener('input', () => set(input.value === '' ? undefined : Number(input.value)));
    return row(input);
  }
  // A string; a duration says so; a key with usual values offers them.
  const list = s.examples ? `${id}-examples` : undefined;
  const input = h('input', { id, type: 'text', 'data-path': path, list, value: cur === undefined ? '' : String(cur),
    placeholder: s.pattern ? 'e.g. 30s, 2m, 250ms' : '', pattern: s.pattern }) as HTMLInputElement;
  input.addEventListener('input', () => set(input.value === '' ? undefined : input.value));
  const dl = s.examples ? h('datalist', { id: list }, s.examples.map((e) => h('option', { value: e }))) : null;
  const f = row(input, s.pattern ? 'a duration' : '');
  if (dl) f.appendChild(dl);
  return f;
}

// A list of blocks (a sweep's runs, LoRA adapters): each its own fields,
// with add and remove.
function listOfObjects(item: Schema, root: Schema, parent: Doc, key: string, path: string, opt: FormOptions, changed: () => void, depth: number): HTMLElement {
  const items: Doc[] = Array.isArray(parent[key]) ? (parent[key] as unknown[]).map((x) => (isObject(x) ? x : {})) : [];
  const box = h('details', { class: `block list depth${depth}`, open: items.length > 0, 'data-path': path }, h('summary', {}, `${label(path)} (${items.length})`));
  const body = h('div', { class: 'fields' });
  const redraw = () => {
    body.replaceChildren();
    items.forEach((it, i) => {
      const inner = () => { parent[key] = items; changed(); };
      body.appendChild(h('fieldset', { class: 'item' }, h('legend', {}, `${label(path)} ${i + 1}`),
        objectFields(item, root, it, path, opt, inner, depth + 1),
        h('button', { type: 'button', class: 'remove', onclick: () => { items.splice(i, 1); if (items.length) parent[key] = items; else delete parent[key]; changed(); redraw(); } }, 'remove')));
    });
    body.appendChild(h('button', { type: 'button', class: 'add', 'data-path': path, onclick: () => { items.push({}); parent[key] = items; changed(); redraw(); } }, `add to ${label(path)}`));
    (box.querySelector('summary') as HTMLElement).textContent = `${label(path)} (${items.length})`;
  };
  redraw();
  box.appendChild(body);
  return box;
}
