package jsonsafe

import (
	"encoding/json"
	"math"
	"testing"
)

func TestOf(t *testing.T) {
	type inner struct {
		A, B float64
		Name string
		N    uint32
	}
	type v struct {
		inner
		Mean   float64            `json:"mean"`
		Skip   float64            `json:"-"`
		Stats  map[string]float64 `json:"stats"`
		Empty  []int
		Ptr    *float64
		hidden int
	}
	x := v{inner: inner{A: 1, B: math.NaN(), Name: "h200", N: 3}, Mean: math.Inf(1), Skip: 3, Stats: map[string]float64{"cv": math.NaN(), "n": 2}}
	b, err := json.Marshal(Of(x))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"A":1,"B":null,"Empty":[],"N":3,"Name":"h200","Ptr":null,"mean":null,"stats":{"cv":null,"n":2}}`
	if string(b) != want {
		t.Fatalf("%s\nwant %s", b, want)
	}
	_ = x.hidden
}
