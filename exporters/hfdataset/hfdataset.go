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
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

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

// Options tune the Parquet files (zero: exporters/parquet defaults).
type Options struct {
	RowGroupRows, ShardBytes int64
	Progress                 func(table string, rows int)
}

// Export writes the runs' data (data/<table>/part-NNNNN.parquet, every
// table of exporters.Tables that has rows) and results under dir.
func Export(ctx context.Context, src analytics.TableReader, store analytics.Store, runIDs []string,
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
	js, err := json.MarshalIndent(jsonSafe(reflect.ValueOf(results)), "", "  ")
	if err != nil {
		return sum, err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return sum, err
	}
	return sum, os.WriteFile(filepath.Join(dir, "README.md"), []byte(card(sum, results, toolVersion)), 0o644)
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

func card(s Summary, results []*analytics.RunResult, version string) string {
	var b strings.Builder
	total := 0
	var present []string
	for _, t := range exporters.Tables {
		if s.Rows[t] > 0 {
			present = append(present, t)
			total += s.Rows[t]
		}
	}
	b.WriteString("---\nlicense: cc-by-4.0\ntask_categories:\n- text-generation\ntags:\n- energy\n- llm-inference\n- gpu-power\n- llm-energy-measure\n")
	fmt.Fprintf(&b, "size_categories:\n- %s\nconfigs:\n", sizeCategory(total))
	for _, t := range present {
		fmt.Fprintf(&b, "- config_name: %s\n  data_files:\n  - split: train\n    path: data/%s/*.parquet\n", t, t)
	}
	b.WriteString("---\n\n# LLM inference energy measurements\n\n")
	fmt.Fprintf(&b, "Exported by llm-energy-measure %s on %s.\n\n", version, time.Now().UTC().Format(time.RFC3339))
	simulated := false
	b.WriteString("## Runs\n\n| run | backend | model | devices | cycles | J/token (mean ± 95% CI) | quality | simulated |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		st := r.Summary["j_per_token"]
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %s | %s | %v |\n", r.RunID, r.Backend, r.Model, len(r.Devices), len(r.Cycles),
			analytics.FormatStat(st), r.Label(), r.Simulated)
		if r.Simulated {
			simulated = true
		}
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
	allSim := len(results) > 0
	for _, r := range results {
		allSim = allSim && r.Simulated
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
stamped by the load generator when each streamed chunk was read, on a
monotonic clock anchored to wall time. See docs/methodology.md of
llm-energy-measure for every formula.

## Uncertainty

Every energy figure carries a systematic uncertainty of ±5% of reading (the
sensor's gain error, which differs between boards), a random uncertainty from
the counter's 100 ms refresh at the window edges, and a quality flag
(ok, low_resolution, gaps, too_short); figures computed from the simulator are marked simulated.

## Units

power_mw in milliwatts, energy_uj in microjoules, every *_ns column an
integer (INT64) of nanoseconds since the Unix epoch, every *_dur_ns column a
duration in nanoseconds: (first_token_ns - sent_ns) / 1e6 is milliseconds.

## Citation

Please cite llm-energy-measure and state the tool version above.
`)
	return b.String()
}

// jsonSafe converts v to plain maps, slices and values for encoding/json,
// with NaN and ±Inf (a figure that could not be computed) as null.
func jsonSafe(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Invalid:
		return nil
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return jsonSafe(v.Elem())
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return f
	case reflect.Struct:
		m := map[string]any{}
		t := v.Type()
		for i := 0; i < v.NumField(); i++ {
			if f := t.Field(i); f.IsExported() {
				name := f.Name
				if tag := strings.Split(f.Tag.Get("json"), ",")[0]; tag == "-" {
					continue
				} else if tag != "" {
					name = tag
				}
				m[name] = jsonSafe(v.Field(i))
			}
		}
		return m
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return []any{}
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = jsonSafe(v.Index(i))
		}
		return out
	case reflect.Map:
		m := map[string]any{}
		for _, k := range v.MapKeys() {
			m[fmt.Sprint(k.Interface())] = jsonSafe(v.MapIndex(k))
		}
		return m
	}
	return v.Interface()
}
