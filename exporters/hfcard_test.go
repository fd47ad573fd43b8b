package exporters_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/exporters/hfdataset"
	lemstore "github.com/llm-energy-measure/lem/store"
	pqstore "github.com/llm-energy-measure/lem/store/parquet"
)

// The metadata keys of Hugging Face's dataset card specification
// (huggingface/hub-docs, datasetcard.md), and the values it enumerates.
var (
	cardKeys = []string{"language", "license", "license_name", "license_link", "license_details", "tags", "annotations_creators",
		"language_creators", "language_details", "pretty_name", "size_categories", "source_datasets", "task_categories", "task_ids",
		"paperswithcode_id", "configs", "dataset_info", "extra_gated_fields", "extra_gated_prompt", "train-eval-index"}
	sizeCategories = []string{"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B",
		"10B<n<100B", "100B<n<1T", "n>1T", "other"}
	// Value dtypes of the datasets library.
	valueDtypes = []string{"null", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
		"float32", "float64", "string", "large_string", "binary", "large_binary"}
	// What DuckDB reads each dtype's Parquet column as.
	duckType = map[string]string{"int64": "BIGINT", "int32": "INTEGER", "uint64": "UBIGINT", "uint32": "UINTEGER", "uint8": "UTINYINT",
		"float64": "DOUBLE", "string": "VARCHAR"}
)

type cardMeta struct {
	PrettyName     string   `yaml:"pretty_name"`
	License        string   `yaml:"license"`
	Tags           []string `yaml:"tags"`
	TaskCategories []string `yaml:"task_categories"`
	SizeCategories []string `yaml:"size_categories"`
	Configs        []struct {
		ConfigName string `yaml:"config_name"`
		DataFiles  []struct {
			Split string `yaml:"split"`
			Path  string `yaml:"path"`
		} `yaml:"data_files"`
	} `yaml:"configs"`
	DatasetInfo []struct {
		ConfigName string `yaml:"config_name"`
		Features   []struct {
			Name     string `yaml:"name"`
			Dtype    string `yaml:"dtype"`
			Sequence string `yaml:"sequence"`
		} `yaml:"features"`
		Splits []struct {
			Name        string `yaml:"name"`
			NumExamples int    `yaml:"num_examples"`
		} `yaml:"splits"`
	} `yaml:"dataset_info"`
}

// TestHFCardMetadata holds the dataset card's YAML to Hugging Face's
// dataset-card specification and to the files beside it: only the
// specification's keys, a pretty_name, no task category that does not fit
// (telemetry is not text-generation data), a size category of its list,
// configs whose paths match the files, and dataset_info features whose
// names, order and types are the Parquet columns as DuckDB reads them,
// with the rows it counts. Units are in the card's prose, by column.
func TestHFCardMetadata(t *testing.T) {
	store, run, _ := buildStore(t)
	st := lemstore.Parquet(store)
	res, err := analytics.AnalyzeRun(context.Background(), st, run)
	if err != nil {
		t.Fatal(err)
	}
	// The results written back, as `lem analyze -write` does, so the
	// result tables are configs too.
	if err := pqstore.Open(store).WriteResults(context.Background(), run, analytics.ResultTables(res, 1)); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := hfdataset.Export(context.Background(), st, st, []string{run}, []*analytics.RunResult{res}, out, "test"); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(filepath.Join(out, "README.md"))
	parts := strings.SplitN(string(text), "---\n", 3)
	if len(parts) != 3 || parts[0] != "" {
		t.Fatalf("card has no YAML front matter:\n%s", text)
	}
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(parts[1]), &raw); err != nil {
		t.Fatalf("front matter: %v\n%s", err, parts[1])
	}
	for k := range raw {
		if !slices.Contains(cardKeys, k) {
			t.Errorf("front matter key %q is not in the dataset card specification", k)
		}
	}
	var m cardMeta
	if err := yaml.Unmarshal([]byte(parts[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m.PrettyName == "" || !strings.Contains(m.PrettyName, "simulated") {
		t.Errorf("pretty_name %q: want one, saying the power is simulated", m.PrettyName)
	}
	if !slices.Contains(m.Tags, "simulated") {
		t.Errorf("tags %v lack simulated", m.Tags)
	}
	if m.License != "cc-by-4.0" {
		t.Errorf("license %q", m.License)
	}
	if slices.Contains(m.TaskCategories, "text-generation") {
		t.Errorf("task_categories %v: telemetry is not text-generation data", m.TaskCategories)
	}
	if len(m.SizeCategories) != 1 || !slices.Contains(sizeCategories, m.SizeCategories[0]) {
		t.Errorf("size_categories %v", m.SizeCategories)
	}
	var tables []string
	for _, c := range m.Configs {
		tables = append(tables, c.ConfigName)
		if len(c.DataFiles) != 1 || c.DataFiles[0].Split != "train" {
			t.Errorf("config %s: data_files %+v", c.ConfigName, c.DataFiles)
			continue
		}
		if files, _ := filepath.Glob(filepath.Join(out, c.DataFiles[0].Path)); len(files) == 0 {
			t.Errorf("config %s: path %s matches no file", c.ConfigName, c.DataFiles[0].Path)
		}
	}
	if len(m.DatasetInfo) != len(m.Configs) || len(tables) < 10 {
		t.Fatalf("dataset_info has %d configs, configs %d (%v)", len(m.DatasetInfo), len(m.Configs), tables)
	}
	got := readBack(t, "parquet", filepath.Join(out, "data"), tables)
	for i, di := range m.DatasetInfo {
		if di.ConfigName != tables[i] {
			t.Errorf("dataset_info[%d] is %s, configs[%d] %s", i, di.ConfigName, i, tables[i])
			continue
		}
		r := got["parquet/"+di.ConfigName]
		var names []string
		for _, f := range di.Features {
			names = append(names, f.Name)
			want := r.Columns[f.Name]
			switch {
			case f.Sequence != "":
				if f.Dtype != "" || f.Sequence != "string" || want != "VARCHAR[]" {
					t.Errorf("%s.%s: sequence %q dtype %q, DuckDB reads %s", di.ConfigName, f.Name, f.Sequence, f.Dtype, want)
				}
			case !slices.Contains(valueDtypes, f.Dtype):
				t.Errorf("%s.%s: dtype %q is no datasets Value type", di.ConfigName, f.Name, f.Dtype)
			case duckType[f.Dtype] != want:
				t.Errorf("%s.%s: dtype %s, but DuckDB reads the column as %s", di.ConfigName, f.Name, f.Dtype, want)
			}
		}
		if !slices.Equal(names, r.Order) {
			t.Errorf("%s: features %v, columns %v", di.ConfigName, names, r.Order)
		}
		if len(di.Splits) != 1 || di.Splits[0].Name != "train" || di.Splits[0].NumExamples != r.Rows {
			t.Errorf("%s: splits %+v, %d rows read", di.ConfigName, di.Splits, r.Rows)
		}
	}
	// Units by column in the prose, and the other units in the runs table.
	for _, want := range []string{"`ts_ns` ns since the Unix epoch (int64)", "`power_mw` mW", "`energy_uj` µJ", "`j_per_token` J per token",
		"| Wh per 1,000 requests | kWh per million tokens | kg CO₂e per million tokens |", "481 gCO₂e/kWh"} {
		if !strings.Contains(parts[2], want) {
			t.Errorf("card lacks %q", want)
		}
	}
}
