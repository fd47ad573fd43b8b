package loadgen

import (
	"bytes"
	"math"
	"testing"
)

// The file parsers a user points lem at (trace, JSONL and ShareGPT
// datasets) take any bytes: an error or a valid result, never a panic, and
// nothing out of range accepted.
func FuzzTrace(f *testing.F) {
	f.Add([]byte("0.5\n1.25\n{\"t\": 2}\n# c\n"))
	f.Add([]byte("{\"timestamp\": 1e308}\n-1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := parseTrace(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		for i, v := range ts {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || (i > 0 && v < ts[i-1]) {
				t.Fatalf("offset %d: %v", i, v)
			}
		}
	})
}

func FuzzJSONL(f *testing.F) {
	f.Add([]byte("{\"prompt\": \"a\", \"max_tokens\": 3}\n{\"prompt\": \"b\"}\n"))
	f.Add([]byte("{\"prompt\": null}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parseJSONL(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		if len(ps) == 0 {
			t.Fatal("no prompts and no error")
		}
		for _, p := range ps {
			if p.MaxTokens < 0 {
				t.Fatalf("%+v", p)
			}
		}
	})
}

func FuzzShareGPT(f *testing.F) {
	f.Add([]byte(`[{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := parseShareGPT(b, "fuzz")
		if err == nil && len(cs) == 0 {
			t.Fatal("no turns and no error")
		}
	})
}
