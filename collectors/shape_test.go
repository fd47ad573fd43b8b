package collectors_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/collectors/nvml"
	"github.com/llm-energy-measure/lem/collectors/rapl"
	"github.com/llm-energy-measure/lem/collectors/sim"
)

// folder is one collector package in the shape every collector has.
type folder struct {
	dir    string
	sample string
	config any // pointer to a zero Config
	build  any // the Build constructor, checked by its type below
}

var folders = []folder{
	{"nvml", nvml.SampleConfig, &nvml.Config{}, nvml.Build},
	{"rapl", rapl.SampleConfig, &rapl.Config{}, rapl.Build},
	{"sim", sim.SampleConfig, &sim.Config{}, sim.Build},
}

// Constructors share one shape (a compile-time check).
var (
	_ func(nvml.Config, collectors.Env) (collectors.Collector, error) = nvml.Build
	_ func(rapl.Config, collectors.Env) (collectors.Collector, error) = rapl.Build
	_ func(sim.Config, collectors.Env) (collectors.Collector, error)  = sim.Build
)

// TestCollectorFolders: each collector folder has a README showing its
// embedded sample configuration verbatim, and the sample decodes strictly
// (no key its Config lacks) into a non-zero Config.
func TestCollectorFolders(t *testing.T) {
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range folders {
		seen[f.dir] = true
		readme, err := os.ReadFile(filepath.Join(f.dir, "README.md"))
		if err != nil {
			t.Errorf("%s: %v", f.dir, err)
			continue
		}
		if f.sample == "" || !strings.Contains(string(readme), "```yaml\n"+f.sample+"```") {
			t.Errorf("%s: README.md does not show sample.yaml verbatim in a yaml block", f.dir)
		}
		dec := yaml.NewDecoder(bytes.NewReader([]byte(f.sample)))
		dec.KnownFields(true)
		if err := dec.Decode(f.config); err != nil {
			t.Errorf("%s: sample.yaml: %v", f.dir, err)
		}
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || name == "loadgen" || name == "testdata" {
			continue // the load generator is configured by the experiment file
		}
		if !seen[name] {
			t.Errorf("collector folder %s is not held to the shape: add it to folders", name)
		}
	}
}
