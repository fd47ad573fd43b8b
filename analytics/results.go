package analytics

import (
	"strings"

	"github.com/llm-energy-measure/lem/schemas"
)

// AttributionMethod is the default per-request method: the fitted power
// model (token weights where a cycle's fit is not determined).
const AttributionMethod = MethodPowerModel

// ResultTables turns r into the rows of run_results, cycle_results and
// request_energy, stamped analyzedNS (the version that replaces earlier
// analyses of the same run).
func ResultTables(r *RunResult, analyzedNS int64) []*schemas.Table {
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	rr := schemas.NewRunResultRows()
	for _, m := range SummaryMetrics {
		s := r.Summary[m]
		rr.RunID.Append(r.RunID)
		rr.Experiment.Append(r.Experiment)
		rr.Backend.Append(r.Backend)
		rr.Model.Append(r.Model)
		rr.Devices.Append(append([]string(nil), r.Devices...))
		rr.Metric.Append(m)
		rr.N.Append(uint32(s.N))
		rr.Mean.Append(s.Mean)
		rr.Std.Append(s.Std)
		rr.CI95.Append(s.CI95)
		rr.CV.Append(s.CV)
		rr.Quality.Append(r.Label()) // as printed: simulated, apportioned and the run-level flags (trend, too_few_cycles …) too
		rr.Simulated.Append(b2u(r.Simulated))
		rr.Apportioned.Append(b2u(r.Apportioned))
		rr.AnalyzedNS.Append(analyzedNS)
	}
	cr := schemas.NewCycleResultRows()
	for i, c := range r.Cycles {
		nc := r.Node.cycle(i)
		cr.CPUPackageJ.Append(nc.PackageJ)
		cr.DRAMJ.Append(nc.DRAMJ)
		cr.CPUDRAMUncJ.Append(nc.UncJ)
		cr.CPUDRAMJPerToken.Append(nc.JPerToken)
		cr.RunID.Append(r.RunID)
		cr.Cycle.Append(c.Cycle)
		cr.From.Append(c.From)
		cr.To.Append(c.To)
		cr.DurationS.Append(c.DurationS)
		cr.EnergyJ.Append(c.EnergyJ)
		cr.StaticJ.Append(c.StaticJ)
		cr.DynamicJ.Append(c.DynamicJ)
		cr.PrefillJ.Append(c.PrefillJ)
		cr.DecodeJ.Append(c.DecodeJ)
		cr.UnattributedJ.Append(c.UnattributedJ)
		cr.EdgeUncJ.Append(c.EdgeUncJ)
		cr.SystemJ.Append(c.SystematicJ)
		cr.Requests.Append(uint32(c.Requests))
		cr.Failed.Append(uint32(c.Failed))
		cr.PromptTokens.Append(c.PromptTokens)
		cr.OutputTokens.Append(c.OutputTokens)
		cr.JPerToken.Append(c.JPerToken)
		cr.TokensPerJ.Append(c.TokensPerJ)
		cr.RequestJp50.Append(c.RequestJp50)
		cr.TTFTp50.Append(c.TTFTp50)
		cr.TTFTp99.Append(c.TTFTp99)
		cr.ITLp50.Append(c.ITLp50)
		cr.ITLp99.Append(c.ITLp99)
		cr.TPOTp50.Append(c.TPOTp50)
		cr.E2Ep50.Append(c.E2Ep50)
		cr.Quality.Append(qualityLabel(c.Quality, c.Simulated, c.Apportioned, c.Flags...))
		cr.Method.Append(c.Method)
		cr.AnalyzedNS.Append(analyzedNS)
	}
	re := schemas.NewRequestEnergyRows()
	byCycle := map[uint32]string{}
	for _, c := range r.Cycles {
		byCycle[c.Cycle] = c.Attribution
	}
	for _, q := range r.Requests {
		re.RunID.Append(r.RunID)
		re.RequestID.Append(q.ID)
		re.Cycle.Append(q.Cycle)
		re.EnergyJ.Append(q.TotalJ())
		re.StaticJ.Append(q.StaticJ)
		re.DynamicJ.Append(q.DynamicJ)
		re.PrefillJ.Append(q.PrefillJ)
		re.DecodeJ.Append(q.DecodeJ)
		re.PromptTokens.Append(q.PromptTokens)
		re.OutputTokens.Append(q.OutputTokens)
		re.JPerOutputToken.Append(q.JPerOutputToken)
		re.JPerInputToken.Append(q.JPerInputToken)
		m := byCycle[q.Cycle]
		if m == "" {
			m = r.Method
		}
		re.Method.Append(m)
		re.AnalyzedNS.Append(analyzedNS)
	}
	return []*schemas.Table{rr.Table(), cr.Table(), re.Table()}
}

// ResultFileName is the Parquet store file holding one run's rows of a
// result table (overwritten when the run is analysed again).
func ResultFileName(runID string) string {
	return "run-" + strings.ReplaceAll(schemas.SubjectToken(runID), "/", "_") + ".parquet"
}
