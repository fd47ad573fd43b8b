// Runs SQL in chDB (an in-process current ClickHouse engine) for
// `go test ./deploy`: node chdb.mjs SETUP.json QUERIES.json
// SETUP.json: statements run in order (migrations, data loads), each must
// succeed; QUERIES.json: queries answered in JSONCompact. Prints
// {version, setup_errors: [...], results: [{names, rows, error}]}.
import { Session } from 'chdb';
import { readFileSync } from 'node:fs';

const [setupPath, queriesPath] = process.argv.slice(2);
const s = new Session();
const out = { setup_errors: [], results: [] };
try {
  out.version = s.query('SELECT version()', 'TSV').trim();
  for (const sql of JSON.parse(readFileSync(setupPath, 'utf8'))) {
    try {
      s.query(sql, 'TSV');
    } catch (e) {
      out.setup_errors.push({ sql: sql.slice(0, 300), error: String(e && e.message ? e.message : e).slice(0, 600) });
    }
  }
  for (const sql of JSON.parse(readFileSync(queriesPath, 'utf8'))) {
    try {
      const r = JSON.parse(s.query(sql, 'JSONCompact'));
      out.results.push({ names: r.meta.map((m) => m.name), rows: r.data });
    } catch (e) {
      out.results.push({ error: String(e && e.message ? e.message : e).slice(0, 600) });
    }
  }
} finally {
  s.close();
}
console.log(JSON.stringify(out));
