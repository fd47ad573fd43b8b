package experiment

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// checkNode walks an experiment file's YAML against the Go type it decodes
// into and returns every problem at once, each with its dotted path and
// line: unknown keys (with the nearest known key as a suggestion) and
// values of the wrong type. The decoder alone stops at the first one and
// names Go types ("field x not found in type backend.VLLMConfig").
func checkNode(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		var errs []error
		for _, c := range n.Content {
			errs = append(errs, checkNode(c, t, path)...)
		}
		return errs
	}
	if n.Kind == yaml.AliasNode || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil
	}
	if t == reflect.TypeOf(yaml.Node{}) {
		// A sweep variant's workload: the Workload fields it overrides.
		if strings.HasSuffix(path, ".workload") {
			return checkNode(n, reflect.TypeOf(Workload{}), path)
		}
		return nil
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()) ||
		reflect.PointerTo(t).Implements(reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()) {
		return typeCheck(n, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return []error{fmt.Errorf("%s: line %d: want a mapping of %s settings, got %q", orTop(path), n.Line, orTop(path), n.Value)}
		}
		fields := yamlFields(t)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("%s: line %d: unknown setting", p, k.Line)
				if s := nearest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", join(path, s))
				}
				errs = append(errs, fmt.Errorf("%s", msg))
				continue
			}
			errs = append(errs, checkNode(v, f, p)...)
		}
		return errs
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return []error{fmt.Errorf("%s: line %d: want a mapping, got %q", path, n.Line, n.Value)}
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
		return errs
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return []error{fmt.Errorf("%s: line %d: want a list, got %q", path, n.Line, n.Value)}
		}
		var errs []error
		for i, c := range n.Content {
			errs = append(errs, checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return errs
	}
	return typeCheck(n, t, path)
}

// typeCheck decodes one value into a fresh t to see that it fits.
func typeCheck(n *yaml.Node, t reflect.Type, path string) []error {
	v := reflect.New(t)
	if err := n.Decode(v.Interface()); err != nil {
		want := t.Kind().String()
		switch {
		case t.Name() == "Duration":
			want = "a duration (30s, 2m)"
		case t.Kind() == reflect.Float64:
			want = "a number"
		case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
			want = "a whole number"
		case t.Kind() == reflect.Bool:
			want = "true or false"
		case t.Kind() == reflect.String:
			want = "a string"
		}
		return []error{fmt.Errorf("%s: line %d: want %s, got %q", path, n.Line, want, n.Value)}
	}
	return nil
}

// yamlFields maps a struct's YAML keys to their types, inline fields
// included.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || (!f.IsExported() && !f.Anonymous):
			continue
		case strings.Contains(opts, "inline"):
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// nearest returns the known key closest to k by edit distance, if close
// enough to be a likely typo.
func nearest(k string, fields map[string]reflect.Type) string {
	keys := make([]string, 0, len(fields))
	for f := range fields {
		keys = append(keys, f)
	}
	sort.Strings(keys)
	best, bd := "", len(k)/3+2
	for _, f := range keys {
		if d := editDistance(k, f); d < bd {
			best, bd = f, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orTop(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}
