package deploy

import (
	"fmt"
	"strings"
)

// Query is one documented SQL query a researcher runs against lem's
// ClickHouse database (named lem here; placeholders in braces), and the
// same question in DuckDB over an export (the views of DuckDBSetup).
type Query struct {
	Title   string
	Purpose string
	SQL     string
	DuckDB  string
}

// Queries are the queries of docs/queries.md (the README's are among
// them); each runs against ClickHouse 18.16 in `go test ./deploy`, must
// return rows there, and must give the same answer in DuckDB over the
// exported Parquet.
var Queries = []Query{
	{"Energy per request of a run",
		"Each request's attributed energy (fitted power model by default, conservation exact per cycle) with its tokens; from `lem analyze -write` (or `lem run`).",
		`SELECT request_id, cycle, energy_j, prefill_j, decode_j, prompt_tokens, output_tokens, j_per_output_token
FROM lem.request_energy FINAL
WHERE run_id = '{run}'
ORDER BY cycle, request_id`,
		`SELECT request_id, cycle, energy_j, prefill_j, decode_j, prompt_tokens, output_tokens, j_per_output_token
FROM lem.request_energy
WHERE run_id = '{run}'
ORDER BY cycle, request_id`},
	{"Prefill vs decode energy per run",
		"How a run's measured energy splits between the prefill and decode phases, summed over its cycles, with the idle (static) part.",
		`SELECT run_id, sum(energy_j) AS run_energy_j, sum(static_j) AS run_static_j, sum(prefill_j) AS run_prefill_j,
       sum(decode_j) AS run_decode_j, run_prefill_j / (run_prefill_j + run_decode_j) AS prefill_share
FROM lem.cycle_results FINAL
GROUP BY run_id
ORDER BY run_id`,
		`SELECT run_id, sum(energy_j) AS run_energy_j, sum(static_j) AS run_static_j, sum(prefill_j) AS run_prefill_j,
       sum(decode_j) AS run_decode_j, run_prefill_j / (run_prefill_j + run_decode_j) AS prefill_share
FROM lem.cycle_results
GROUP BY run_id
ORDER BY run_id`},
	{"J per output token by backend and arrival",
		"Mean J/token (over cycles, with its 95% CI) per backend, model and arrival — the process with its concurrency (closed loop) or rate (open loop) — read from each run's stored configuration (snake_case keys, as in the experiment file).",
		`SELECT backend, model, visitParamExtractString(config, 'process') AS arrival,
       if(arrival = 'concurrency', toFloat64(visitParamExtractInt(config, 'concurrency')), visitParamExtractFloat(config, 'rate')) AS load,
       avg(mean) AS j_per_token, max(ci95) AS widest_ci95, count() AS runs
FROM (SELECT run_id, backend, model, mean, ci95 FROM lem.run_results FINAL WHERE metric = 'j_per_token') AS r
ANY LEFT JOIN (SELECT run_id, any(config) AS config FROM lem.runs GROUP BY run_id) AS c USING run_id
GROUP BY backend, model, arrival, load
ORDER BY backend, model, arrival, load`,
		`SELECT backend, model, arrival, load, avg(mean) AS j_per_token, max(ci95) AS widest_ci95, count(*) AS runs
FROM (SELECT backend, model, mean, ci95, config ->> '$.workload.arrival.process' AS arrival,
             if(arrival = 'concurrency', CAST(config ->> '$.workload.arrival.concurrency' AS DOUBLE),
                CAST(config ->> '$.workload.arrival.rate' AS DOUBLE)) AS load
      FROM lem.run_results
      LEFT JOIN (SELECT run_id, any_value(config) AS config FROM lem.runs GROUP BY run_id) USING (run_id)
      WHERE metric = 'j_per_token')
GROUP BY backend, model, arrival, load
ORDER BY backend, model, arrival, load`},
	{"Power around one request",
		"The 20 ms power samples of every device of the request's run, from one second before it was sent to one second after its stream ended.",
		`SELECT device_uuid, ts_ns, power_mw / 1000 AS watts, source
FROM lem.power_samples
WHERE device_uuid IN (SELECT arrayJoin(devices) FROM lem.runs WHERE run_id = '{run}')
  AND ts_ns BETWEEN (SELECT min(sent_ns) - 1000000000 FROM lem.requests WHERE run_id = '{run}' AND request_id = '{request}')
                AND (SELECT max(done_ns) + 1000000000 FROM lem.requests WHERE run_id = '{run}' AND request_id = '{request}')
ORDER BY device_uuid, ts_ns`,
		`SELECT device_uuid, ts_ns, power_mw / 1000 AS watts, source
FROM lem.power_samples
WHERE device_uuid IN (SELECT unnest(devices) FROM lem.runs WHERE run_id = '{run}')
  AND ts_ns BETWEEN (SELECT min(sent_ns) - 1000000000 FROM lem.requests WHERE run_id = '{run}' AND request_id = '{request}')
                AND (SELECT max(done_ns) + 1000000000 FROM lem.requests WHERE run_id = '{run}' AND request_id = '{request}')
ORDER BY device_uuid, ts_ns`},
	{"Energy of a time window from the counter",
		"The counter's energy per device over any window (here the run's span): the difference of the cumulative counter, resets excluded.",
		`SELECT device_uuid, (max(energy_uj) - min(energy_uj)) / 1e6 AS joules, count() AS readings
FROM lem.energy_readings
WHERE reset = 0
  AND ts_before_ns BETWEEN (SELECT min(ts_ns) FROM lem.runs WHERE run_id = '{run}')
                       AND (SELECT max(ts_ns) FROM lem.runs WHERE run_id = '{run}')
GROUP BY device_uuid`,
		`SELECT device_uuid, (max(energy_uj) - min(energy_uj)) / 1e6 AS joules, count(*) AS readings
FROM lem.energy_readings
WHERE reset = 0
  AND ts_before_ns BETWEEN (SELECT min(ts_ns) FROM lem.runs WHERE run_id = '{run}')
                       AND (SELECT max(ts_ns) FROM lem.runs WHERE run_id = '{run}')
GROUP BY device_uuid`},
	{"Latency percentiles of a run",
		"TTFT and end-to-end latency percentiles of the successful requests, from the client's stamps.",
		`SELECT quantiles(0.5, 0.9, 0.99)((first_token_ns - sent_ns) / 1e6) AS ttft_ms,
       quantiles(0.5, 0.9, 0.99)((done_ns - sent_ns) / 1e6) AS e2e_ms, count() AS requests
FROM lem.requests
WHERE run_id = '{run}' AND status = 'ok'`,
		`SELECT quantile_cont((first_token_ns - sent_ns) / 1e6, [0.5, 0.9, 0.99]) AS ttft_ms,
       quantile_cont((done_ns - sent_ns) / 1e6, [0.5, 0.9, 0.99]) AS e2e_ms, count(*) AS requests
FROM lem.requests
WHERE run_id = '{run}' AND status = 'ok'`},
	{"TTFT of each request",
		"Each request's time to first token in milliseconds, in the order they were scheduled: nanosecond columns subtract to nanoseconds.",
		`SELECT request_id, output_tokens, (first_token_ns - sent_ns) / 1e6 AS ttft_ms
FROM lem.requests WHERE run_id = '{run}' ORDER BY scheduled_ns`,
		`SELECT request_id, output_tokens, (first_token_ns - sent_ns) / 1e6 AS ttft_ms
FROM lem.requests WHERE run_id = '{run}' ORDER BY scheduled_ns`},
	{"Power per second",
		"Each device's mean power per second of wall time, per power source (the 20 ms buffer, the simulator, an apportioned share).",
		`SELECT device_uuid, source, intDiv(ts_ns, 1000000000) AS s, avg(power_mw) / 1000 AS watts
FROM lem.power_samples GROUP BY device_uuid, source, s ORDER BY device_uuid, source, s`,
		`SELECT device_uuid, source, ts_ns // 1000000000 AS s, avg(power_mw) / 1000 AS watts
FROM lem.power_samples GROUP BY device_uuid, source, s ORDER BY device_uuid, source, s`},
	{"Ingest lag",
		"How far behind the newest stored event of each table is, in seconds: a growing lag means ingest or ClickHouse is falling behind.",
		`SELECT 'power_samples' AS table_name, toUnixTimestamp(now()) - intDiv(max(ts_ns), 1000000000) AS lag_s, count() AS row_count FROM lem.power_samples
UNION ALL
SELECT 'tokens' AS table_name, toUnixTimestamp(now()) - intDiv(max(ts_ns), 1000000000) AS lag_s, count() AS row_count FROM lem.tokens`,
		`SELECT 'power_samples' AS table_name, CAST(floor(epoch(now())) AS BIGINT) - max(ts_ns) // 1000000000 AS lag_s, count(*) AS row_count FROM lem.power_samples
UNION ALL
SELECT 'tokens' AS table_name, CAST(floor(epoch(now())) AS BIGINT) - max(ts_ns) // 1000000000 AS lag_s, count(*) AS row_count FROM lem.tokens`},
}

// Expand fills a query's placeholders and database name.
func (q Query) Expand(db, run, request string) string {
	s := strings.ReplaceAll(q.SQL, "lem.", db+".")
	s = strings.ReplaceAll(s, "{run}", run)
	return strings.ReplaceAll(s, "{request}", request)
}

// ExpandDuckDB fills the DuckDB form's placeholders.
func (q Query) ExpandDuckDB(run, request string) string {
	s := strings.ReplaceAll(q.DuckDB, "{run}", run)
	return strings.ReplaceAll(s, "{request}", request)
}

// DuckDBSetup is the SQL that makes an export folder (`lem export
// -format parquet -out DIR`, or a dataset's data/ folder) queryable as the
// schema lem in DuckDB: one view per table folder.
func DuckDBSetup(dir string, tables []string) string {
	var b strings.Builder
	b.WriteString("CREATE SCHEMA IF NOT EXISTS lem;\n")
	for _, t := range tables {
		fmt.Fprintf(&b, "CREATE OR REPLACE VIEW lem.%s AS SELECT * FROM read_parquet('%s/%s/*.parquet');\n", t, dir, t)
	}
	return b.String()
}

// QueriesMarkdown is docs/queries.md.
func QueriesMarkdown() string {
	var b strings.Builder
	b.WriteString(`# Queries

Generated by ` + "`lem docs queries`" + ` from deploy/queries.go; ` + "`go test ./deploy`" + ` runs every
query against a real ClickHouse (18.16, the oldest server lem supports)
holding a simulated run and its analysis, and fails on an SQL error or an
empty result; it then exports the same data to Parquet (` + "`lem export`" + `) and
requires each query's DuckDB form to give the same answer over the export,
and loads the export into a current ClickHouse (chDB, in-process, after
every migration including the version-gated modern ones) where each query
and each Grafana panel must answer as on 18.16.
The database is ` + "`lem`" + ` (` + "`-database`" + `); replace ` + "`{run}`" + ` and
` + "`{request}`" + ` with ids. Times are integers of ns since the Unix epoch
(` + "`*_ns`" + `, in ClickHouse and in every export), power in mW, energy in µJ in
the event tables and in J in the result tables; result tables are
ReplacingMergeTree, read with FINAL (docs/methodology.md has every
definition; an export holds each result row once).

## DuckDB over an export

` + "`lem export -run RUN -out DIR`" + ` writes one folder per table;
in DuckDB, make each folder a view in the schema ` + "`lem`" + ` (one line per table
folder the export holds; for a Hugging Face dataset, use its ` + "`data/`" + ` folder):

` + "```sql\n" + DuckDBSetup("DIR", []string{"runs", "requests", "tokens", "power_samples", "energy_readings", "run_results", "cycle_results", "request_energy"}) + "```" + `

Then each query below has a DuckDB form: the same question, in DuckDB's
dialect (no FINAL, ` + "`unnest`" + ` for ` + "`arrayJoin`" + `, ` + "`quantile_cont`" + ` for ` + "`quantiles`" + `,
JSON paths for ` + "`visitParam*`" + `).

`)
	for i, q := range Queries {
		fmt.Fprintf(&b, "## %d. %s\n\n%s\n\nClickHouse:\n\n```sql\n%s\n```\n\nDuckDB over an export:\n\n```sql\n%s\n```\n\n", i+1, q.Title, q.Purpose, q.SQL, q.DuckDB)
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}
