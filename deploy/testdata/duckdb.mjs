// Runs SQL in DuckDB for `go test ./deploy`: node duckdb.mjs SETUP.sql QUERIES.json
// SETUP.sql creates the views over an export; QUERIES.json is a list of
// SQL strings. Prints [{names, rows, error}] with DuckDB's lossless JSON
// values (64-bit integers as strings, NaN and Infinity as strings).
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';

const [setupPath, queriesPath] = process.argv.slice(2);
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
await con.run(readFileSync(setupPath, 'utf8'));
const out = [];
for (const sql of JSON.parse(readFileSync(queriesPath, 'utf8'))) {
  try {
    const r = await con.runAndReadAll(sql);
    out.push({ names: r.columnNames(), rows: r.getRowsJson() });
  } catch (e) {
    out.push({ error: String(e && e.message ? e.message : e) });
  }
}
console.log(JSON.stringify(out));
