-- lem:min-server 18.16
-- A figure that could not be computed (a window without power has no
-- energy, a cycle without requests no latency) is NULL, not NaN: SQL
-- aggregates skip NULLs, where a NaN would poison avg() and a 0 would
-- pass for a measurement (issue 12).

ALTER TABLE {db}.run_results
    MODIFY COLUMN mean Nullable(Float64),
    MODIFY COLUMN std Nullable(Float64),
    MODIFY COLUMN ci95 Nullable(Float64),
    MODIFY COLUMN cv Nullable(Float64);

ALTER TABLE {db}.cycle_results
    MODIFY COLUMN duration_s Nullable(Float64),
    MODIFY COLUMN energy_j Nullable(Float64),
    MODIFY COLUMN static_j Nullable(Float64),
    MODIFY COLUMN dynamic_j Nullable(Float64),
    MODIFY COLUMN prefill_j Nullable(Float64),
    MODIFY COLUMN decode_j Nullable(Float64),
    MODIFY COLUMN unattributed_j Nullable(Float64),
    MODIFY COLUMN edge_unc_j Nullable(Float64),
    MODIFY COLUMN systematic_j Nullable(Float64),
    MODIFY COLUMN j_per_token Nullable(Float64),
    MODIFY COLUMN tokens_per_j Nullable(Float64),
    MODIFY COLUMN request_j_p50 Nullable(Float64),
    MODIFY COLUMN ttft_p50_ms Nullable(Float64),
    MODIFY COLUMN ttft_p99_ms Nullable(Float64),
    MODIFY COLUMN itl_p50_ms Nullable(Float64),
    MODIFY COLUMN itl_p99_ms Nullable(Float64),
    MODIFY COLUMN tpot_p50_ms Nullable(Float64),
    MODIFY COLUMN e2e_p50_ms Nullable(Float64);

ALTER TABLE {db}.request_energy
    MODIFY COLUMN energy_j Nullable(Float64),
    MODIFY COLUMN static_j Nullable(Float64),
    MODIFY COLUMN dynamic_j Nullable(Float64),
    MODIFY COLUMN prefill_j Nullable(Float64),
    MODIFY COLUMN decode_j Nullable(Float64),
    MODIFY COLUMN j_per_output_token Nullable(Float64),
    MODIFY COLUMN j_per_input_token Nullable(Float64);
