package deploy

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed experiments/*.yaml
var experimentFiles embed.FS

// Template is an example experiment file of deploy/experiments/.
type Template struct {
	Name string `json:"name"` // file name without .yaml
	YAML string `json:"yaml"`
}

// ExperimentTemplates returns the example experiment files, by name.
func ExperimentTemplates() []Template {
	names, _ := fs.Glob(experimentFiles, "experiments/*.yaml")
	sort.Strings(names)
	out := make([]Template, 0, len(names))
	for _, n := range names {
		b, _ := experimentFiles.ReadFile(n)
		out = append(out, Template{Name: strings.TrimSuffix(strings.TrimPrefix(n, "experiments/"), ".yaml"), YAML: string(b)})
	}
	return out
}
