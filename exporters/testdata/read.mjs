// Reads lem's exports with readers independent of lem: DuckDB for Parquet
// and CSV, Apache Arrow JS for Arrow IPC. Prints one JSON object:
// {"<format>/<table>": {rows, columns: {name: type}, sums: {col: n}, meta: {k: v}, row_groups}}.
// Usage: node read.mjs FORMAT DIR TABLE...
import { DuckDBInstance } from '@duckdb/node-api';
import { tableFromIPC } from 'apache-arrow';
import { readFileSync, existsSync } from 'node:fs';

const [format, dir, ...tables] = process.argv.slice(2);
const out = {};
const sumCols = ['power_mw', 'energy_uj', 'tokens', 'output_tokens', 'value', 'server_decode_dur_ns'];

if (format === 'arrow') {
  for (const t of tables) {
    const path = `${dir}/${t}.arrow`;
    if (!existsSync(path)) continue;
    const tab = tableFromIPC(readFileSync(path));
    const columns = {}, sums = {};
    const order = tab.schema.fields.map((f) => f.name);
    for (const f of tab.schema.fields) {
      columns[f.name] = String(f.type);
      if (sumCols.includes(f.name)) {
        let s = 0;
        for (const v of tab.getChild(f.name)) s += Number(v);
        sums[f.name] = s;
      }
    }
    const meta = Object.fromEntries(tab.schema.metadata);
    if (t === 'requests') {
      let s = 0;
      const a = tab.getChild('first_token_ns'), b = tab.getChild('sent_ns');
      for (let i = 0; i < tab.numRows; i++) s += Number(a.get(i) - b.get(i)) / 1e6;
      sums.ttft_ms = s;
    }
    out[`arrow/${t}`] = { rows: tab.numRows, columns, order, sums, meta, batches: tab.batches.length };
  }
} else {
  const db = await DuckDBInstance.create(':memory:');
  const con = await db.connect();
  const q = async (sql) => (await con.runAndReadAll(sql)).getRowObjectsJS();
  for (const t of tables) {
    let src;
    if (format === 'csv') {
      if (!existsSync(`${dir}/${t}.csv`)) continue;
      src = `read_csv('${dir}/${t}.csv', header = true)`;
    } else {
      if (!existsSync(`${dir}/${t}`)) continue;
      src = `read_parquet('${dir}/${t}/*.parquet')`;
    }
    const [{ n }] = await q(`SELECT count(*) AS n FROM ${src}`);
    const desc = await q(`DESCRIBE SELECT * FROM ${src}`);
    const columns = Object.fromEntries(desc.map((r) => [r.column_name, r.column_type]));
    const order = desc.map((r) => r.column_name);
    const sums = {};
    if (t === 'requests') {
      // The README's own arithmetic: nanoseconds in, milliseconds out.
      const [{ s }] = await q(`SELECT sum((first_token_ns - sent_ns) / 1e6) AS s FROM ${src}`);
      sums.ttft_ms = Number(s);
    }
    for (const c of sumCols) {
      if (c in columns) {
        const [{ s }] = await q(`SELECT sum(CAST("${c}" AS DOUBLE)) AS s FROM ${src}`);
        sums[c] = Number(s);
      }
    }
    const entry = { rows: Number(n), columns, order, sums };
    if (format !== 'csv') {
      const kv = await q(`SELECT DISTINCT CAST(key AS VARCHAR) AS k, CAST(value AS VARCHAR) AS v FROM parquet_kv_metadata('${dir}/${t}/*.parquet')`);
      entry.meta = Object.fromEntries(kv.map((r) => [r.k, r.v]));
      const [{ g }] = await q(`SELECT count(DISTINCT (file_name, row_group_id)) AS g FROM parquet_metadata('${dir}/${t}/*.parquet')`);
      entry.row_groups = Number(g);
      const [{ f }] = await q(`SELECT count(DISTINCT file_name) AS f FROM parquet_metadata('${dir}/${t}/*.parquet')`);
      entry.files = Number(f);
      const codecs = await q(`SELECT DISTINCT compression FROM parquet_metadata('${dir}/${t}/*.parquet')`);
      entry.codecs = codecs.map((r) => r.compression);
    }
    out[`${format}/${t}`] = entry;
  }
}
console.log(JSON.stringify(out));
