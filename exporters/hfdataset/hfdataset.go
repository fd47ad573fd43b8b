// Package hfdataset exports runs as a Hugging Face dataset folder:
// data/<table>/*.parquet for the raw tables, results.json with the
// analysed figures, and README.md with a dataset card (YAML front matter
// with configs, license, task categories and size; prose on how the data
// was measured, its uncertainty and how to cite it).
package hfdataset

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/llm-energy-measure/lem/internal/jsonsafe"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/exporters"
	lemparquet "github.com/llm-energy-measure/lem/exporters/parquet"
	"github.com/llm-energy-measure/lem/schemas"
)

// Summary describes what was exported.
type Summary struct {
	Dir   string
	Rows  map[string]int
	Files []string
	// Hardware maps each measured device UUID to "name on host" (empty
	// when the devices table does not describe it).
	Hardware map[string]string
}

// Options tune the Parquet files (zero: exporters/parquet defaults) and
// the footprint the card states (zero: analytics.DefaultFootprint).
type Options struct {
	RowGroupRows, ShardBytes int64
	Progress                 func(table string, rows int)
	Footprint                analytics.Footprint
	// Provenance, when set, is the card's section on where the runs come
	// from and how they were checked (a platform's verification policy).
	Provenance string
}

// Source is what the dataset is read from: streamed tables (the data)
// and whole ones (the devices, for the card); store.Store is both.
type Source interface {
	exporters.Scanner
	analytics.TableReader
}

// Export writes the runs' data (data/<table>/part-NNNNN.parquet, every
// table of exporters.Tables that has rows) and results under dir.
func Export(ctx context.Context, src Source, store analytics.Store, runIDs []string,
	results []*analytics.RunResult, dir, toolVersion string, opts ...Options) (Summary, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	pw := &lemparquet.Writer{Dir: filepath.Join(dir, "data"), RowGroupRows: o.RowGroupRows, ShardBytes: o.ShardBytes}
	es, err := exporters.Export(ctx, src, store, exporters.Selection{RunIDs: runIDs}, toolVersion, pw, o.Progress)
	sum := Summary{Dir: dir, Rows: es.Rows, Files: pw.Files}
	if err != nil {
		return sum, err
	}
	// The measured devices, for the card's hardware section.
	dev := schemas.NewDeviceRows()
	if err := src.ReadTable(ctx, dev.Table(), schemas.Filter{RunIDs: runIDs}); err != nil {
		return sum, err
	}
	hw := map[string]string{}
	for _, r := range results {
		for _, d := range r.Devices {
			hw[d] = ""
		}
	}
	for i, u := range dev.UUID.V {
		if _, ok := hw[u]; ok {
			hw[u] = dev.Name.V[i] + " on " + dev.Host.V[i]
		}
	}
	sum.Hardware = hw
	js, err := json.MarshalIndent(jsonsafe.Of(results), "", "  ")
	if err != nil {
		return sum, err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return sum, err
	}
	fp := o.Footprint
	if fp.GridGPerKWh == 0 {
		fp = analytics.DefaultFootprint
	}
	return sum, os.WriteFile(filepath.Join(dir, "README.md"), []byte(card(sum, results, toolVersion, fp, o.Provenance)), 0o644)
}

func sizeCategory(n int) string {
	switch {
	case n < 1_000:
		return "n<1K"
	case n < 10_000:
		return "1K<n<10K"
	case n < 100_000:
		return "10K<n<100K"
	case n < 1_000_000:
		return "100K<n<1M"
	}
	return "1M<n<10M"
}

// Feature is one column of a config in the card's dataset_info, typed as
// Hugging Face datasets types it (Value dtypes; a list of strings as a
// sequence).
type Feature struct {
	Name, Dtype, Sequence string
}

// Features returns the dataset_info features of table: every column, in
// the table's order, with the dtype its Parquet column has.
func Features(table string) []Feature {
	var fs []Feature
	for _, c := range schemas.EmptyTable(table).Columns {
		f := Feature{Name: c.Name()}
		switch c.Data().(type) {
		case []string:
			f.Dtype = "string"
		case []int64:
			f.Dtype = "int64"
		case []int32:
			f.Dtype = "int32"
		case []uint64:
			f.Dtype = "uint64"
		case []uint32:
			f.Dtype = "uint32"
		case []uint8:
			f.Dtype = "uint8"
		case []float64:
			f.Dtype = "float64"
		case [][]string:
			f.Sequence = "string"
		default:
			f.Dtype = "string"
		}
		fs = append(fs, f)
	}
	return fs
}

// Unit says what a column's values are measured in, from lem's naming
// rules (docs/events.md gives each field).
func Unit(table, col string) string {
	switch {
	case strings.HasSuffix(col, "_dur_ns"):
		return "ns (a duration)"
	case strings.HasSuffix(col, "_ns"):
		return "ns since the Unix epoch (int64)"
	case strings.HasSuffix(col, "_mw"):
		return "mW"
	case strings.HasSuffix(col, "_uj"):
		return "µJ (cumulative counter)"
	case strings.HasPrefix(col, "j_per_"):
		return "J per " + strings.TrimPrefix(col, "j_per_")
	case col == "tokens_per_j":
		return "tokens per J"
	case strings.HasSuffix(col, "_j"), strings.HasSuffix(col, "_j_p50"):
		return "J"
	case strings.HasSuffix(col, "_ms"):
		return "ms"
	case col == "duration_s":
		return "s"
	case strings.HasSuffix(col, "_mhz"):
		return "MHz"
	case strings.HasSuffix(col, "_c"):
		return "°C"
	case strings.HasSuffix(col, "_pct"):
		return "%"
	case strings.HasSuffix(col, "_bytes"):
		return "bytes"
	case strings.HasSuffix(col, "tokens") || col == "requests" || col == "failed":
		return "count"
	case table == schemas.TableMetric && col == "value":
		return "the metric's own unit (its name says it)"
	case table == schemas.TableRunResults && (col == "mean" || col == "std" || col == "ci95"):
		return "the metric's unit (see `metric`: j_per_token in J, wh_per_1000_requests in Wh, …)"
	}
	return ""
}

func card(s Summary, results []*analytics.RunResult, version string, fp analytics.Footprint, provenance string) string {
	var b strings.Builder
	total := 0
	var present []string
	for _, t := range exporters.Tables {
		if s.Rows[t] > 0 {
			present = append(present, t)
			total += s.Rows[t]
		}
	}
	allSim := len(results) > 0
	simulated := false
	for _, r := range results {
		allSim = allSim && r.Simulated
		simulated = simulated || r.Simulated
	}
	pretty := "LLM inference energy measurements (llm-energy-measure)"
	if allSim {
		pretty = "LLM inference energy, simulated power (llm-energy-measure pipeline test)"
	}
	// No task_categories: this is telemetry about inference, not data to
	// train or evaluate a text-generation model on.
	fmt.Fprintf(&b, "---\npretty_name: %q\nlicense: cc-by-4.0\ntags:\n- energy\n- llm-inference\n- gpu-power\n- llm-energy-measure\n", pretty)
	if simulated {
		b.WriteString("- simulated\n")
	}
	fmt.Fprintf(&b, "size_categories:\n- %s\nconfigs:\n", sizeCategory(total))
	for _, t := range present {
		fmt.Fprintf(&b, "- config_name: %s\n  data_files:\n  - split: train\n    path: data/%s/*.parquet\n", t, t)
	}
	b.WriteString("dataset_info:\n")
	for _, t := range present {
		fmt.Fprintf(&b, "- config_name: %s\n  features:\n", t)
		for _, f := range Features(t) {
			if f.Sequence != "" {
				fmt.Fprintf(&b, "  - name: %s\n    sequence: %s\n", f.Name, f.Sequence)
			} else {
				fmt.Fprintf(&b, "  - name: %s\n    dtype: %s\n", f.Name, f.Dtype)
			}
		}
		fmt.Fprintf(&b, "  splits:\n  - name: train\n    num_examples: %d\n", s.Rows[t])
	}
	fmt.Fprintf(&b, "---\n\n# %s\n\n", pretty)
	fmt.Fprintf(&b, "Exported by llm-energy-measure %s on %s.\n\n", version, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "## Runs\n\nMeans over cycles ± 95%% CI (Student t; none under three cycles). kg CO₂e assume %s gCO₂e/kWh (%s); "+
		"GPU energy only.\n\n", sig3(fp.GridGPerKWh), fp.GridSource)
	b.WriteString("| run | backend | model | devices | cycles | J/token | Wh per 1,000 requests | kWh per million tokens | kg CO₂e per million tokens | quality | simulated |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		co2, _ := fp.PerMillionTokens(r)
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %s | %s | %s | %s | %s | %v |\n", r.RunID, r.Backend, r.Model, len(r.Devices), len(r.Cycles),
			analytics.FormatStat(r.Summary["j_per_token"]), analytics.FormatStat(r.Summary["wh_per_1000_requests"]),
			analytics.FormatStat(r.Summary["kwh_per_million_tokens"]), analytics.FormatStat(co2), r.Label(), r.Simulated)
	}
	if simulated {
		b.WriteString("\n**Simulated data.** Power in runs marked simulated came from lem's simulator (source `sim`), " +
			"not from a sensor. Such data exercises the pipeline; it must not be cited as a measurement.\n")
	}
	b.WriteString("\n## Hardware and software\n\n| device | name and host |\n|---|---|\n")
	devs := make([]string, 0, len(s.Hardware))
	for d := range s.Hardware {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	for _, d := range devs {
		name := s.Hardware[d]
		if name == "" {
			name = "(not in the devices table)"
		}
		fmt.Fprintf(&b, "| %s | %s |\n", d, name)
	}
	fmt.Fprintf(&b, "\nSoftware: llm-energy-measure %s; each run's backend, model and normalised configuration are in the "+
		"`runs` config (`config`, `inventory` columns: driver, NVML and CUDA versions where collected).\n", version)
	b.WriteString("\n## Tables\n\n| config | rows |\n|---|---|\n")
	keys := append([]string(nil), present...)
	sort.Strings(keys)
	for _, t := range keys {
		fmt.Fprintf(&b, "| %s | %d |\n", t, s.Rows[t])
	}
	b.WriteString("\n## Columns and units\n\nTypes are in `dataset_info` above; units (from lem's column naming, docs/events.md of llm-energy-measure):\n")
	for _, t := range present {
		fmt.Fprintf(&b, "\n**%s**: ", t)
		var parts []string
		for _, f := range Features(t) {
			if u := Unit(t, f.Name); u != "" {
				parts = append(parts, fmt.Sprintf("`%s` %s", f.Name, u))
			}
		}
		b.WriteString(strings.Join(parts, "; ") + ".\n")
	}
	b.WriteString("\n## How it was measured\n\n")
	switch {
	case allSim:
		b.WriteString("**No power here was measured.** Every run of this dataset used lem's simulated GPU (source `sim`):\n" +
			"its power follows a load model, not a sensor. The pipeline, the formulas and the timing are the ones\n" +
			"real runs use; the energy figures are not measurements and must not be cited as such. In a measured run, ")
	case simulated:
		b.WriteString("Runs marked simulated used lem's simulated GPU (source `sim`), not a sensor. In the others, ")
	}
	lead := "Power"
	if simulated {
		lead = "power"
	}
	b.WriteString(lead + ` and energy come from each GPU's on-board sensor through NVML: the
cumulative energy counter (refreshes every ~100 ms) is the reference, and the
driver's 20 ms power buffer places that energy in time. Token arrivals were`)
	b.WriteString(`
stamped with the kernel's receive time of the segment that carried each
streamed chunk where the kernel gives one (requests.kernel_stamped counts
them per request), else when the load generator read it, on a monotonic
clock anchored to wall time. See docs/methodology.md and docs/streaming.md
of llm-energy-measure for every formula.
`)
	if provenance != "" {
		b.WriteString("\n## Provenance and verification\n\n" + strings.TrimSpace(provenance) + "\n")
	}
	b.WriteString(`
## Uncertainty

Every energy figure carries a systematic uncertainty of ±5% of reading (the
sensor's gain error, which differs between boards), a random uncertainty from
the counter's 100 ms refresh at the window edges, and a quality label: ok,
or the flags that apply (no_power, gaps, low_resolution, too_short,
negative_dynamic, too_few_cycles, outlier_cycle, trend, schedule_slip;
docs/methodology.md
of llm-energy-measure defines each); figures computed from the simulator are
marked simulated. A figure that could not be computed is null in
results.json and in the exported results, never 0.

## Units

power_mw in milliwatts, energy_uj in microjoules, every *_ns column an
integer (INT64) of nanoseconds since the Unix epoch, every *_dur_ns column a
duration in nanoseconds: (first_token_ns - sent_ns) / 1e6 is milliseconds.

## Citation

Please cite llm-energy-measure and state the tool version above.
`)
	return b.String()
}

// sig3 prints x with three significant digits.
func sig3(x float64) string { return strconv.FormatFloat(x, 'g', 3, 64) }
