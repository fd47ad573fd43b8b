// Package jsonsafe turns values into plain maps, slices and scalars that
// encoding/json can always encode: a float that is NaN or ±Inf (a figure
// that could not be computed) becomes null — unknown, never 0.
package jsonsafe

import (
	"fmt"
	"math"
	"reflect"
	"strings"
)

// Of returns v as JSON-ready values. Struct fields follow encoding/json's
// names (the json tag's name, "-" skipped, unexported skipped, embedded
// structs without a tag flattened).
func Of(v any) any { return of(reflect.ValueOf(v)) }

func of(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Invalid:
		return nil
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return of(v.Elem())
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
			tag := strings.Split(f.Tag.Get("json"), ",")[0]
			if tag == "-" {
				continue
			}
			if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
				// Promoted fields, as encoding/json does (also of an
				// unexported embedded type).
				for k, x := range of(v.Field(i)).(map[string]any) {
					m[k] = x
				}
				continue
			}
			if !f.IsExported() {
				continue
			}
			name := f.Name
			if tag != "" {
				name = tag
			}
			m[name] = of(v.Field(i))
		}
		return m
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return []any{}
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = of(v.Index(i))
		}
		return out
	case reflect.Map:
		m := map[string]any{}
		iter := v.MapRange()
		for iter.Next() {
			m[fmt.Sprint(iter.Key().Interface())] = of(iter.Value())
		}
		return m
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint()
	}
	if !v.CanInterface() {
		return nil // reached through an unexported field: not encoded
	}
	return v.Interface()
}
