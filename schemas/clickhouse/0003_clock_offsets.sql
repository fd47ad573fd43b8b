-- lem:min-server 18.16
-- Sensor-clock offsets (event kind clock): how the NVML driver's sample
-- stamps map onto the host clock, with bounds. Additive: a new table.

CREATE TABLE IF NOT EXISTS {db}.clock_offsets (
    host String,
    source String,
    device_index UInt32,
    device_uuid String,
    ts_ns Int64,
    offset_dur_ns Int64,
    low_dur_ns Int64,
    high_dur_ns Int64,
    applied_dur_ns Int64,
    reads UInt32,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (host, device_uuid, ts_ns);
