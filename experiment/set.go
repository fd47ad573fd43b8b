package experiment

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LoadWith reads an experiment file with overrides applied: each set is
// path=value, path dotted as in the file (backend.kind=vllm,
// workload.arrival.rate=4), value in YAML (4, true, [0, 1], {min: 1s}).
// The result is checked like the file itself, so an override names its
// path when it is wrong, and it is what the runs store.
func LoadWith(path string, sets []string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(sets) > 0 {
		if b, err = ApplySets(b, sets); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ApplySets returns the YAML document b with each path=value set in it,
// creating mappings along the path where they are missing.
func ApplySets(b []byte, sets []string) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	if root.Kind == 0 {
		root = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("-set: the file is not a mapping of settings")
	}
	for _, s := range sets {
		path, value, ok := strings.Cut(s, "=")
		if !ok || path == "" {
			return nil, fmt.Errorf("-set %q: want path=value, e.g. workload.arrival.rate=4", s)
		}
		var v yaml.Node
		if err := yaml.Unmarshal([]byte(value), &v); err != nil {
			return nil, fmt.Errorf("-set %s: value %q is not YAML: %w", path, value, err)
		}
		val := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: ""}
		if len(v.Content) == 1 {
			val = v.Content[0]
		}
		n := root.Content[0]
		keys := strings.Split(path, ".")
		for i, k := range keys {
			if k == "" {
				return nil, fmt.Errorf("-set %s: empty key in the path", path)
			}
			var child *yaml.Node
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == k {
					child = n.Content[j+1]
					if i == len(keys)-1 {
						n.Content[j+1] = val
					}
					break
				}
			}
			if i == len(keys)-1 {
				if child == nil {
					n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, val)
				}
				break
			}
			if child == nil {
				child = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, child)
			}
			if child.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("-set %s: %s is a value in the file, not a group of settings", path, strings.Join(keys[:i+1], "."))
			}
			n = child
		}
	}
	return yaml.Marshal(&root)
}
