package backend

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestPluginRegistration: a backend is one registration — it appears in
// Kinds, in the capability matrix with its unsupported features, its
// aliases normalise to it, and its command line and block validation run.
func TestPluginRegistration(t *testing.T) {
	p := &Plugin{Kind: "toy", Order: 2000, Aliases: []string{"toy-server"},
		Args: func(a *Argv, c *Config, _ string) error {
			a.Arg("toy-serve", c.Model)
			a.Num("--port", c.Port)
			return a.Dtype("--dtype", c.Precision)
		},
		Dtypes:      map[string]string{"bf16": "bfloat16"},
		Validate:    func(c *Config, bad func(string, string, string)) { bad("backend.toy", "always", "nothing") },
		Unsupported: map[string][2]string{FeatureLoRA: {"toys have no adapters", "vllm"}}}
	register(p)
	defer func() {
		delete(plugins, "toy")
		Kinds = slices.DeleteFunc(Kinds, func(k string) bool { return k == "toy" })
	}()
	if Kinds[len(Kinds)-1] != "toy" {
		t.Fatalf("kinds %v", Kinds)
	}
	c := &Config{Kind: "Toy-Server", Model: "m", Precision: "bf16", LoRA: []LoRA{{Name: "a", Path: "/a"}}}
	c.Normalize()
	if c.Kind != "toy" {
		t.Fatalf("alias normalised to %q", c.Kind)
	}
	l, err := Command(c, "")
	if err != nil || !strings.HasPrefix(l.String(), "toy-serve m --port 8000 --dtype bfloat16") {
		t.Fatalf("command %q, %v", l.String(), err)
	}
	var params []string
	for _, pr := range c.Validate() {
		params = append(params, pr.Param)
	}
	if got := strings.Join(params, ","); got != "backend.lora,backend.toy" {
		t.Errorf("problems %s, want the unsupported LoRA and the block's own", got)
	}
	var b bytes.Buffer
	WriteMatrix(&b)
	if !strings.Contains(b.String(), "| toy |") || !strings.Contains(b.String(), "LoRA adapters on toy: toys have no adapters") {
		t.Errorf("matrix lacks the new backend:\n%s", b.String())
	}
}

// TestEveryPluginComplete: launched kinds build a command; blocks are named
// when a kind has one.
func TestEveryPluginComplete(t *testing.T) {
	for _, k := range Kinds {
		p := plugins[k]
		if (p.HasBlock == nil) != (p.Block == "") {
			t.Errorf("%s: Block %q and HasBlock disagree", k, p.Block)
		}
		if p.Args == nil && k != External {
			t.Errorf("%s: no command line", k)
		}
	}
}
