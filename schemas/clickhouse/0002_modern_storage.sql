-- lem:min-server 20.5
-- Additive storage tuning for modern servers (never needed for correctness):
-- LowCardinality for repeated identity strings, codecs for time series, and
-- a DateTime64(9) alias for tools that want a native nanosecond timestamp.

ALTER TABLE {db}.power_samples
    MODIFY COLUMN host LowCardinality(String),
    MODIFY COLUMN source LowCardinality(String),
    MODIFY COLUMN device_uuid LowCardinality(String),
    MODIFY COLUMN ts_ns Int64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN power_mw Int64 CODEC(T64, ZSTD(1)),
    MODIFY COLUMN stream_seq UInt64 CODEC(DoubleDelta, ZSTD(1)),
    ADD COLUMN IF NOT EXISTS time DateTime64(9) ALIAS fromUnixTimestamp64Nano(ts_ns);

ALTER TABLE {db}.energy_readings
    MODIFY COLUMN host LowCardinality(String),
    MODIFY COLUMN source LowCardinality(String),
    MODIFY COLUMN device_uuid LowCardinality(String),
    MODIFY COLUMN ts_before_ns Int64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN ts_after_ns Int64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN energy_uj Int64 CODEC(DoubleDelta, ZSTD(1)),
    ADD COLUMN IF NOT EXISTS time DateTime64(9) ALIAS fromUnixTimestamp64Nano(ts_before_ns);

ALTER TABLE {db}.device_state
    MODIFY COLUMN host LowCardinality(String),
    MODIFY COLUMN source LowCardinality(String),
    MODIFY COLUMN device_uuid LowCardinality(String),
    MODIFY COLUMN ts_ns Int64 CODEC(DoubleDelta, ZSTD(1)),
    ADD COLUMN IF NOT EXISTS time DateTime64(9) ALIAS fromUnixTimestamp64Nano(ts_ns);

ALTER TABLE {db}.tokens
    MODIFY COLUMN run_id LowCardinality(String),
    MODIFY COLUMN ts_ns Int64 CODEC(Delta, ZSTD(1)),
    ADD COLUMN IF NOT EXISTS time DateTime64(9) ALIAS fromUnixTimestamp64Nano(ts_ns);

ALTER TABLE {db}.requests
    MODIFY COLUMN run_id LowCardinality(String),
    MODIFY COLUMN status LowCardinality(String);
