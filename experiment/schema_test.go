package experiment

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// The experiment file's JSON Schema, compiled by an independent validator,
// accepts every shipped example and refuses what lem refuses: unknown
// keys, wrongly typed values, durations that are not durations, arrival
// processes lem does not know — and lem's own parser agrees on each.
func TestJSONSchemaAgreesWithTheParser(t *testing.T) {
	b, err := JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("experiment.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("experiment.schema.json")
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	validate := func(y []byte) error {
		var v any
		if err := yaml.Unmarshal(y, &v); err != nil {
			t.Fatal(err)
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		return sch.Validate(inst)
	}
	examples, _ := filepath.Glob("../deploy/experiments/*.yaml")
	if len(examples) < 5 {
		t.Fatalf("%d examples found", len(examples))
	}
	for _, f := range examples {
		y, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(y); err != nil {
			t.Errorf("%s: refused by the schema: %v", f, err)
		}
		if err := lemRefuses(y); err != nil {
			t.Errorf("%s: refused by lem: %v", f, err)
		}
	}
	for _, bad := range []string{
		"workload: {requets: 3}",                            // unknown key
		"workload: {requests: many}",                        // not a number
		"measurement: {baseline: soon}",                     // not a duration
		"workload: {arrival: {process: bursty, rate: 2}}",   // no such process
		"vllm: {tp: 2}",                                     // unknown backend setting (under backend:)
		"sweep: [{name: a, workload: {requests: x}}]",       // a variant's workload, typed too
		"collectors: {scrape: {interval: 1s, matches: []}}", // unknown collector key
	} {
		y := []byte("backend: {kind: vllm, model: m}\n" + bad + "\n")
		if strings.HasPrefix(bad, "vllm:") {
			y = []byte("backend: {kind: vllm, model: m, " + bad + "}\n")
		}
		if err := validate(y); err == nil {
			t.Errorf("the schema accepts %q", bad)
		}
		if lemRefuses(y) == nil {
			t.Errorf("lem accepts %q", bad)
		}
	}
}

// lemRefuses reads an experiment file as `lem check-config` does (without
// opening the files it names) and returns why it is refused, or nil.
func lemRefuses(y []byte) error {
	c, err := Parse(y)
	if err != nil {
		return err
	}
	c.Normalize()
	if errs := c.ValidateStatic(); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}
