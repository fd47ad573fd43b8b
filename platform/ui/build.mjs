// Builds the platform's front end into dist/ (embedded by go:embed):
// hashed assets and an index.html that names them.
import * as esbuild from 'esbuild';
import { readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';

for (const f of readdirSync('dist', { withFileTypes: true })) {
  if (f.name !== '.keep') rmSync(`dist/${f.name}`, { recursive: true, force: true });
}
mkdirSync('dist/assets', { recursive: true });
const result = await esbuild.build({
  entryPoints: { app: 'src/main.ts' },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'esm',
  target: 'es2022',
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'none',
});
const out = Object.keys(result.metafile.outputs).map((p) => p.replace(/^dist\//, ''));
const js = out.find((p) => p.endsWith('.js'));
const css = out.find((p) => p.endsWith('.css'));
writeFileSync('dist/index.html', `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lem — LLM energy results</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/${css}">
<script type="module" src="/${js}"></script>
</head>
<body>
<div id="app"><p class="loading">Loading…</p></div>
<noscript>This page needs JavaScript; the same data is at <a href="/api/leaderboard">/api/leaderboard</a>.</noscript>
</body>
</html>
`);
console.log(`built ${js} and ${css}`);
