-- lem:min-server 18.16
-- The base schema. It must run on ClickHouse 18.16: no codecs, TTL,
-- LowCardinality or DateTime64. Time is epoch nanoseconds (Int64) in sort
-- keys; `ts` (DateTime, seconds) exists for partitioning and Grafana.
-- Every event row carries the position of its message: the stream's epoch
-- (creation time, ns) and the JetStream stream sequence. Ingest resumes
-- after max(stream_seq) of the current epoch: exactly-once effect.

CREATE TABLE IF NOT EXISTS {db}.power_samples (
    host String,
    source String,
    device_index UInt32,
    device_uuid String,
    ts_ns Int64,
    power_mw Int64,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (host, device_uuid, ts_ns);

CREATE TABLE IF NOT EXISTS {db}.energy_readings (
    host String,
    source String,
    device_index UInt32,
    device_uuid String,
    ts_before_ns Int64,
    ts_after_ns Int64,
    energy_uj Int64,
    reset UInt8,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_before_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (host, device_uuid, ts_before_ns);

CREATE TABLE IF NOT EXISTS {db}.device_state (
    host String,
    source String,
    device_index UInt32,
    device_uuid String,
    ts_ns Int64,
    sm_clock_mhz UInt32,
    mem_clock_mhz UInt32,
    temperature_c Int32,
    util_gpu_pct UInt32,
    util_mem_pct UInt32,
    mem_used_bytes UInt64,
    throttle_reasons UInt64,
    power_limit_mw Int64,
    pstate Int32,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (host, device_uuid, ts_ns);

CREATE TABLE IF NOT EXISTS {db}.gaps (
    host String,
    source String,
    device_index UInt32,
    device_uuid String,
    from_ns Int64,
    to_ns Int64,
    reason String,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(from_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (host, device_uuid, from_ns);

CREATE TABLE IF NOT EXISTS {db}.requests (
    run_id String,
    request_id String,
    cycle UInt32,
    scheduled_ns Int64,
    sent_ns Int64,
    first_token_ns Int64,
    last_token_ns Int64,
    done_ns Int64,
    prompt_tokens UInt32,
    output_tokens UInt32,
    status String,
    error String,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(scheduled_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (run_id, request_id);

CREATE TABLE IF NOT EXISTS {db}.tokens (
    run_id String,
    request_id String,
    token_index UInt32,
    ts_ns Int64,
    tokens UInt32,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (run_id, request_id, token_index);

CREATE TABLE IF NOT EXISTS {db}.runs (
    run_id String,
    experiment String,
    cycle UInt32,
    phase String,
    ts_ns Int64,
    backend String,
    model String,
    host String,
    devices Array(String),
    config String,
    inventory String,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (run_id, ts_ns);

CREATE TABLE IF NOT EXISTS {db}.devices (
    host String,
    device_index UInt32,
    device_uuid String,
    device_name String,
    mig_parent_uuid String,
    source String,
    seen_ns Int64
) ENGINE = ReplacingMergeTree(seen_ns) ORDER BY (host, device_uuid, source);
