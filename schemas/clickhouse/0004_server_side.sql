-- lem:min-server 18.16
-- The inference server's own view (issue 7): per-request timings reported
-- by the server, and the Prometheus samples scraped during runs (event
-- kind metric). Additive: new columns (0 = not reported) and a new table.

ALTER TABLE {db}.requests
    ADD COLUMN server_queue_dur_ns Int64 DEFAULT 0,
    ADD COLUMN server_prefill_dur_ns Int64 DEFAULT 0,
    ADD COLUMN server_decode_dur_ns Int64 DEFAULT 0;

CREATE TABLE IF NOT EXISTS {db}.server_metrics (
    run_id String,
    endpoint String,
    ts_ns Int64,
    name String,
    labels String,
    value Float64,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (run_id, name, labels, ts_ns);
