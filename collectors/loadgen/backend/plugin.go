package backend

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// A Plugin is everything lem knows about one kind of inference server:
// its name and aliases, its block in the experiment file, how its
// command line is built, what it validates in its block, and which
// capabilities it lacks (with why and what instead). Each backend is one
// file registering one Plugin; the kinds, the validation and the
// capability matrix in docs/backends.md follow from the registrations.
type Plugin struct {
	Kind string
	// Order places the kind in documentation and listings.
	Order int
	// Aliases normalise to Kind ("trtllm" → "tensorrt-llm").
	Aliases []string
	// Block is the YAML key of the backend's own settings (backend.<Block>)
	// and HasBlock reports whether a configuration sets it.
	Block    string
	HasBlock func(c *Config) bool
	// Dtypes maps canonical precisions (fp32, fp16, bf16) to the server's
	// spelling; a precision missing here is refused.
	Dtypes map[string]string
	// Args builds the command line (nil: attached to, never launched).
	Args func(a *Argv, c *Config, pyServer string) error
	// ExeArgs is how many leading elements of Args backend.command
	// replaces (default 1: "python3 -m sglang.launch_server" is 3).
	ExeArgs int
	// Validate reports problems of the backend's own block.
	Validate func(c *Config, bad func(param, why, instead string))
	// Unsupported maps a capability's Feature to why the backend lacks it
	// and what to use instead.
	Unsupported map[string][2]string
}

// plugins is the registry: a plain map filled by each backend's file.
var plugins = map[string]*Plugin{}

func register(p *Plugin) {
	if plugins[p.Kind] != nil {
		panic("backend: kind " + p.Kind + " registered twice")
	}
	plugins[p.Kind] = p
	Kinds = append(Kinds, p.Kind)
	sort.SliceStable(Kinds, func(i, j int) bool { return plugins[Kinds[i]].Order < plugins[Kinds[j]].Order })
}

// canonical is a kind's own name for any of its spellings (lower-cased,
// trimmed; an unknown name is returned as that).
func canonical(kind string) string {
	k := strings.ToLower(strings.TrimSpace(kind))
	for _, p := range plugins {
		if contains(p.Aliases, k) {
			return p.Kind
		}
	}
	return k
}

// Canonical returns a backend kind's own name for any of its spellings,
// or an error naming the kinds.
func Canonical(kind string) (string, error) {
	k := canonical(kind)
	if plugins[k] == nil {
		return "", fmt.Errorf("unknown backend kind %q (one of %s)", kind, strings.Join(Kinds, ", "))
	}
	return k, nil
}

// Kinds lists every backend kind, in documentation order.
var Kinds []string

// Argv collects a command line.
type Argv struct {
	a      []string
	files  map[string][]byte
	dtypes map[string]string
	kind   string
}

// Arg appends xs.
func (a *Argv) Arg(xs ...string) { a.a = append(a.a, xs...) }

// Num appends flag v unless v is 0 (the server's default).
func (a *Argv) Num(flag string, v int) {
	if v != 0 {
		a.Arg(flag, strconv.Itoa(v))
	}
}

// Frac appends flag v unless v is 0.
func (a *Argv) Frac(flag string, v float64) {
	if v != 0 {
		a.Arg(flag, strconv.FormatFloat(v, 'g', -1, 64))
	}
}

// Dtype appends flag with the server's spelling of the configured
// precision (nothing for the default or fp8, which is a quantisation).
func (a *Argv) Dtype(flag, precision string) error {
	if precision == "" || precision == "fp8" {
		return nil
	}
	n, ok := a.dtypes[precision]
	if !ok {
		return fmt.Errorf("backend.precision: %s has no %s", a.kind, precision)
	}
	a.Arg(flag, n)
	return nil
}

// Opt appends flag v unless v is empty.
func (a *Argv) Opt(flag, v string) {
	if v != "" {
		a.Arg(flag, v)
	}
}

// Seed appends flag with the configured seed, if any.
func (a *Argv) Seed(flag string, seed *int) {
	if seed != nil {
		a.Arg(flag, strconv.Itoa(*seed))
	}
}

// PrecisionQuant appends the precision as dtypeFlag and fp8 or the
// configured weight quantisation as quantFlag (vLLM's and SGLang's way).
func (a *Argv) PrecisionQuant(dtypeFlag, quantFlag string, c *Config) error {
	if err := a.Dtype(dtypeFlag, c.Precision); err != nil {
		return err
	}
	if c.Precision == "fp8" {
		a.Arg(quantFlag, "fp8")
	} else if q := c.Quantization; q != nil && q.Enabled {
		a.Arg(quantFlag, q.Method)
	}
	return nil
}

// Parallel appends the tensor, pipeline and data degrees above 1 (an
// empty flag: the server has no such degree).
func (a *Argv) Parallel(tp, pp, dp string, p Parallelism) {
	for _, f := range []struct {
		flag string
		v    int
	}{{tp, p.Tensor}, {pp, p.Pipeline}, {dp, p.Data}} {
		if f.flag != "" {
			a.Num(f.flag, oneIsZero(f.v))
		}
	}
}

// File asks for a file written into the run's directory before start.
func (a *Argv) File(name string, content []byte) {
	if a.files == nil {
		a.files = map[string][]byte{}
	}
	a.files[name] = content
}

// oneIsZero leaves a degree of 1 off the command line (the default).
func oneIsZero(v int) int {
	if v == 1 {
		return 0
	}
	return v
}

// loraPairs renders adapters as name=path.
func loraPairs(ls []LoRA) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Name + "=" + l.Path
	}
	return out
}
