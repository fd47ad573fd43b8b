-- lem:min-server 18.16
-- What analytics computes, written back beside the events (issue 4): run
-- summaries, per-cycle figures, per-request attributed energy. A run
-- analysed again replaces its rows: ReplacingMergeTree on analyzed_ns, so
-- read with FINAL.

CREATE TABLE IF NOT EXISTS {db}.run_results (
    run_id String,
    experiment String,
    backend String,
    model String,
    devices Array(String),
    metric String,
    n UInt32,
    mean Float64,
    std Float64,
    ci95 Float64,
    cv Float64,
    quality String,
    simulated UInt8,
    apportioned UInt8,
    analyzed_ns Int64
) ENGINE = ReplacingMergeTree(analyzed_ns) ORDER BY (run_id, metric);

CREATE TABLE IF NOT EXISTS {db}.cycle_results (
    run_id String,
    cycle UInt32,
    from_ns Int64,
    to_ns Int64,
    duration_s Float64,
    energy_j Float64,
    static_j Float64,
    dynamic_j Float64,
    prefill_j Float64,
    decode_j Float64,
    unattributed_j Float64,
    edge_unc_j Float64,
    systematic_j Float64,
    requests UInt32,
    failed UInt32,
    prompt_tokens UInt64,
    output_tokens UInt64,
    j_per_token Float64,
    tokens_per_j Float64,
    request_j_p50 Float64,
    ttft_p50_ms Float64,
    ttft_p99_ms Float64,
    itl_p50_ms Float64,
    itl_p99_ms Float64,
    tpot_p50_ms Float64,
    e2e_p50_ms Float64,
    quality String,
    method String,
    analyzed_ns Int64,
    ts DateTime DEFAULT toDateTime(intDiv(from_ns, 1000000000))
) ENGINE = ReplacingMergeTree(analyzed_ns) ORDER BY (run_id, cycle);

CREATE TABLE IF NOT EXISTS {db}.request_energy (
    run_id String,
    request_id String,
    cycle UInt32,
    energy_j Float64,
    static_j Float64,
    dynamic_j Float64,
    prefill_j Float64,
    decode_j Float64,
    prompt_tokens UInt32,
    output_tokens UInt32,
    j_per_output_token Float64,
    j_per_input_token Float64,
    method String,
    analyzed_ns Int64
) ENGINE = ReplacingMergeTree(analyzed_ns) ORDER BY (run_id, request_id);
