-- lem:min-server 18.16
-- The results platform's history (event kind platform, issue 15): every
-- change of its state — runs published, uploads verified or refused,
-- tokens made or revoked, sign-ins — beside the telemetry. Additive.

CREATE TABLE IF NOT EXISTS {db}.platform_events (
    ts_ns Int64,
    type String,
    subject String,
    actor String,
    payload String,
    stream_epoch Int64,
    stream_seq UInt64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ns, 1000000000))
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (type, subject, ts_ns);
