package schemas

// Result tables: what analytics computes from the events, written back
// next to them (`lem analyze -write`, and by `lem run` and `lem demo`) so
// that SQL, Grafana and exports see the same figures as the printed tables.
// Rows are replaced when a run is analysed again (ClickHouse:
// ReplacingMergeTree on analyzed_ns, read with FINAL; Parquet store: one
// file per run, overwritten).
const (
	TableRunResults   = "run_results"
	TableCycleResults = "cycle_results"
	TableRequestEnerg = "request_energy"
)

// RunResultRows builds run_results: one row per summarised metric.
type RunResultRows struct {
	t                                         Table
	RunID, Experiment, Backend, Model, Metric *Col[string]
	Devices                                   *Col[[]string]
	N                                         *Col[uint32]
	Mean, Std, CI95, CV                       *Col[float64]
	Quality                                   *Col[string]
	Simulated, Apportioned                    *Col[uint8]
	AnalyzedNS                                *Col[int64]
}

// NewRunResultRows returns an empty run_results builder.
func NewRunResultRows() *RunResultRows {
	r := &RunResultRows{RunID: newCol[string]("run_id", "String"), Experiment: newCol[string]("experiment", "String"),
		Backend: newCol[string]("backend", "String"), Model: newCol[string]("model", "String"),
		Devices: newCol[[]string]("devices", "Array(String)"), Metric: newCol[string]("metric", "String"),
		N: newCol[uint32]("n", "UInt32"), Mean: figure("mean"), Std: figure("std"),
		CI95: figure("ci95"), CV: figure("cv"), Quality: newCol[string]("quality", "String"),
		Simulated: newCol[uint8]("simulated", "UInt8"), Apportioned: newCol[uint8]("apportioned", "UInt8"),
		AnalyzedNS: newCol[int64]("analyzed_ns", "Int64")}
	r.t = Table{Name: TableRunResults, Columns: []Column{r.RunID, r.Experiment, r.Backend, r.Model, r.Devices, r.Metric,
		r.N, r.Mean, r.Std, r.CI95, r.CV, r.Quality, r.Simulated, r.Apportioned, r.AnalyzedNS}}
	return r
}

// Table returns the rows as a table.
func (r *RunResultRows) Table() *Table { return &r.t }

// CycleResultRows builds cycle_results: one row per measured cycle.
type CycleResultRows struct {
	t                                                   Table
	RunID                                               *Col[string]
	Cycle, Requests, Failed                             *Col[uint32]
	From, To                                            *Col[int64]
	DurationS, EnergyJ, StaticJ, DynamicJ               *Col[float64]
	PrefillJ, DecodeJ, UnattributedJ, EdgeUncJ, SystemJ *Col[float64]
	PromptTokens, OutputTokens                          *Col[uint64]
	JPerToken, TokensPerJ, RequestJp50                  *Col[float64]
	TTFTp50, TTFTp99, ITLp50, ITLp99, TPOTp50, E2Ep50   *Col[float64]
	Quality, Method                                     *Col[string]
	// The host's CPU package and DRAM energy over the cycle from RAPL,
	// their interpolation uncertainty and (package + DRAM) per output
	// token: NULL where the host's RAPL was not collected (or lacks the
	// domain, or does not cover the cycle). Not in the GPU figures.
	CPUPackageJ, DRAMJ, CPUDRAMUncJ, CPUDRAMJPerToken *Col[float64]
	AnalyzedNS                                        *Col[int64]
}

// NewCycleResultRows returns an empty cycle_results builder.
func NewCycleResultRows() *CycleResultRows {
	f := figure
	r := &CycleResultRows{RunID: newCol[string]("run_id", "String"), Cycle: newCol[uint32]("cycle", "UInt32"),
		From: newCol[int64]("from_ns", "Int64"), To: newCol[int64]("to_ns", "Int64"), DurationS: f("duration_s"),
		EnergyJ: f("energy_j"), StaticJ: f("static_j"), DynamicJ: f("dynamic_j"), PrefillJ: f("prefill_j"), DecodeJ: f("decode_j"),
		UnattributedJ: f("unattributed_j"), EdgeUncJ: f("edge_unc_j"), SystemJ: f("systematic_j"),
		Requests: newCol[uint32]("requests", "UInt32"), Failed: newCol[uint32]("failed", "UInt32"),
		PromptTokens: newCol[uint64]("prompt_tokens", "UInt64"), OutputTokens: newCol[uint64]("output_tokens", "UInt64"),
		JPerToken: f("j_per_token"), TokensPerJ: f("tokens_per_j"), RequestJp50: f("request_j_p50"),
		TTFTp50: f("ttft_p50_ms"), TTFTp99: f("ttft_p99_ms"), ITLp50: f("itl_p50_ms"), ITLp99: f("itl_p99_ms"),
		TPOTp50: f("tpot_p50_ms"), E2Ep50: f("e2e_p50_ms"), Quality: newCol[string]("quality", "String"),
		Method: newCol[string]("method", "String"), CPUPackageJ: f("cpu_package_j"), DRAMJ: f("dram_j"),
		CPUDRAMUncJ: f("cpu_dram_unc_j"), CPUDRAMJPerToken: f("cpu_dram_j_per_token"), AnalyzedNS: newCol[int64]("analyzed_ns", "Int64")}
	r.t = Table{Name: TableCycleResults, Columns: []Column{r.RunID, r.Cycle, r.From, r.To, r.DurationS, r.EnergyJ, r.StaticJ,
		r.DynamicJ, r.PrefillJ, r.DecodeJ, r.UnattributedJ, r.EdgeUncJ, r.SystemJ, r.Requests, r.Failed, r.PromptTokens,
		r.OutputTokens, r.JPerToken, r.TokensPerJ, r.RequestJp50, r.TTFTp50, r.TTFTp99, r.ITLp50, r.ITLp99, r.TPOTp50, r.E2Ep50,
		r.Quality, r.Method, r.CPUPackageJ, r.DRAMJ, r.CPUDRAMUncJ, r.CPUDRAMJPerToken, r.AnalyzedNS}}
	return r
}

// Table returns the rows as a table.
func (r *CycleResultRows) Table() *Table { return &r.t }

// RequestEnergyRows builds request_energy: each request's attributed energy.
type RequestEnergyRows struct {
	t                                             Table
	RunID, RequestID, Method                      *Col[string]
	Cycle, PromptTokens, OutputTokens             *Col[uint32]
	EnergyJ, StaticJ, DynamicJ, PrefillJ, DecodeJ *Col[float64]
	JPerOutputToken, JPerInputToken               *Col[float64]
	AnalyzedNS                                    *Col[int64]
}

// NewRequestEnergyRows returns an empty request_energy builder.
func NewRequestEnergyRows() *RequestEnergyRows {
	f := figure
	r := &RequestEnergyRows{RunID: newCol[string]("run_id", "String"), RequestID: newCol[string]("request_id", "String"),
		Cycle: newCol[uint32]("cycle", "UInt32"), EnergyJ: f("energy_j"), StaticJ: f("static_j"), DynamicJ: f("dynamic_j"),
		PrefillJ: f("prefill_j"), DecodeJ: f("decode_j"), PromptTokens: newCol[uint32]("prompt_tokens", "UInt32"),
		OutputTokens: newCol[uint32]("output_tokens", "UInt32"), JPerOutputToken: f("j_per_output_token"),
		JPerInputToken: f("j_per_input_token"), Method: newCol[string]("method", "String"), AnalyzedNS: newCol[int64]("analyzed_ns", "Int64")}
	r.t = Table{Name: TableRequestEnerg, Columns: []Column{r.RunID, r.RequestID, r.Cycle, r.EnergyJ, r.StaticJ, r.DynamicJ,
		r.PrefillJ, r.DecodeJ, r.PromptTokens, r.OutputTokens, r.JPerOutputToken, r.JPerInputToken, r.Method, r.AnalyzedNS}}
	return r
}

// Table returns the rows as a table.
func (r *RequestEnergyRows) Table() *Table { return &r.t }

// figure is a column of a computed figure: Nullable(Float64), where NULL
// (NaN in Go) means the figure could not be computed — a window without
// power has no energy, not 0 — so that SQL aggregates skip it (avg over
// NULLs) instead of averaging a NaN or a 0 in. Parquet and Arrow write it
// as an optional double, CSV as an empty cell.
func figure(name string) *Col[float64] { return newCol[float64](name, "Nullable(Float64)") }
