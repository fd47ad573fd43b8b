package arch

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/llm-energy-measure/lem"

// layer of every package of the module: a package may import only
// packages of lower layers (docs/architecture.md draws them). A new
// package must be placed here; an import pointing up or sideways fails.
var layer = map[string]int{
	"schemas": 0,

	"internal/spool": 1, "internal/progress": 1, "internal/jsonsafe": 1, "internal/chserver": 1, "internal/sleep": 1, "internal/fence": 1,
	"internal/pacedserver": 1, "internal/gof": 1,

	"internal/bus": 2, "internal/logging": 2, "collectors": 2, "store/clickhouse": 2, "store/parquet": 2,

	"store": 3, "ingest": 3, "analytics": 3,
	"collectors/nvml": 3, "collectors/rapl": 3, "collectors/sim": 3,
	"collectors/loadgen": 3, "collectors/loadgen/backend": 3,

	"exporters": 4, "exporters/arrow": 4, "exporters/csv": 4, "exporters/parquet": 4, "exporters/plots": 4,
	"experiment": 4, "internal/testenv": 4,

	"exporters/hfdataset": 5, "deploy": 5, "internal/arch": 5,

	"platform": 6,

	"cmd/lem": 7,
}

// onlyIn names third-party modules that only one seam may import.
var onlyIn = map[string][]string{
	"github.com/ClickHouse/":         {"store/clickhouse", "internal/testenv"},
	"github.com/parquet-go/":         {"store/parquet"},
	"github.com/apache/arrow-go/":    {"exporters/arrow"},
	"github.com/nats-io/nats-server": {"internal/bus"},
	"github.com/NVIDIA/go-nvml":      {"collectors/nvml", "cmd/lem"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(f[0], module), "/")
		pkgs = append(pkgs, pkg)
		from, ok := layer[pkg]
		if !ok {
			t.Errorf("package %s has no layer: place it in internal/arch and docs/architecture.md", pkg)
			continue
		}
		for _, imp := range f[1:] {
			if rel, ours := strings.CutPrefix(imp, module+"/"); ours {
				if to, ok := layer[rel]; ok && to >= from {
					t.Errorf("%s (layer %d) imports %s (layer %d): imports go down only", pkg, from, rel, to)
				}
				continue
			}
			for prefix, allowed := range onlyIn {
				if strings.HasPrefix(imp, prefix) && !contains(allowed, pkg) {
					t.Errorf("%s imports %s: only %v may", pkg, imp, allowed)
				}
			}
		}
	}
	sort.Strings(pkgs)
	if len(pkgs) < len(layer)-2 {
		t.Errorf("go list found %d packages: %v", len(pkgs), pkgs)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
