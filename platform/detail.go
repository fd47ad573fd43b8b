package platform

import (
	"fmt"
	"math"
	"reflect"
	"sort"

	"github.com/llm-energy-measure/lem/analytics"
)

// Histogram is a distribution in equal bins from Min to Max.
type Histogram struct {
	Min, Max float64
	Counts   []int
	N        int
}

// runDetail is what the experiment page shows of a recomputed run: the
// result without its per-request rows (a histogram of their energies
// instead), JSON-safe (NaN and ±Inf become null: unknown, never 0).
func runDetail(r *analytics.RunResult) any {
	cp := *r
	cp.Requests = nil
	var total, prefill, decode []float64
	for _, q := range r.Requests {
		if t := q.TotalJ(); !math.IsNaN(t) {
			total = append(total, t)
			prefill = append(prefill, q.PrefillJ)
			decode = append(decode, q.DecodeJ)
		}
	}
	return sanitize(reflect.ValueOf(struct {
		analytics.RunResult
		RequestEnergy  *Histogram
		RequestPrefill *Histogram
		RequestDecode  *Histogram
		Label          string
	}{cp, histogram(total, 30), histogram(prefill, 30), histogram(decode, 30), r.Label()}))
}

func histogram(xs []float64, bins int) *Histogram {
	if len(xs) == 0 {
		return nil
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	h := &Histogram{Min: s[0], Max: s[len(s)-1], Counts: make([]int, bins), N: len(s)}
	w := (h.Max - h.Min) / float64(bins)
	for _, x := range s {
		i := bins - 1
		if w > 0 {
			i = min(int((x-h.Min)/w), bins-1)
		}
		h.Counts[i]++
	}
	return h
}

// sanitize turns v into JSON-ready values with non-finite floats as nil.
func sanitize(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Invalid:
		return nil
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return sanitize(v.Elem())
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return f
	case reflect.Struct:
		m := map[string]any{}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				for k, x := range sanitize(v.Field(i)).(map[string]any) {
					m[k] = x
				}
				continue
			}
			m[f.Name] = sanitize(v.Field(i))
		}
		return m
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return []any{}
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = sanitize(v.Index(i))
		}
		return out
	case reflect.Map:
		m := map[string]any{}
		iter := v.MapRange()
		for iter.Next() {
			m[toKey(iter.Key())] = sanitize(iter.Value())
		}
		return m
	}
	return v.Interface()
}

func toKey(k reflect.Value) string {
	if k.Kind() == reflect.String {
		return k.String()
	}
	return fmt.Sprint(k.Interface())
}
