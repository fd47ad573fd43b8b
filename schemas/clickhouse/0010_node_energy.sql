-- lem:min-server 18.16
-- The host's CPU package and DRAM energy per cycle from RAPL, beside the
-- GPU figures (issue 12): NULL where RAPL was not collected. Older rows
-- read NULL.

ALTER TABLE {db}.cycle_results
    ADD COLUMN cpu_package_j Nullable(Float64) AFTER method,
    ADD COLUMN dram_j Nullable(Float64) AFTER cpu_package_j,
    ADD COLUMN cpu_dram_unc_j Nullable(Float64) AFTER dram_j,
    ADD COLUMN cpu_dram_j_per_token Nullable(Float64) AFTER cpu_dram_unc_j;
