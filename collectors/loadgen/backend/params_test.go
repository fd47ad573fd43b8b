package backend

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSafetensors writes a file with the given tensors' shapes in its
// header and zeros for data.
func writeSafetensors(t *testing.T, path string, shapes map[string][]int64) {
	t.Helper()
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := int64(0)
	for name, sh := range shapes {
		n := int64(2)
		for _, d := range sh {
			n *= d
		}
		hdr[name] = map[string]any{"dtype": "BF16", "shape": sh, "data_offsets": []int64{off, off + n}}
		off += n
	}
	j, _ := json.Marshal(hdr)
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(j)))
	b = append(append(b, j...), make([]byte, off)...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSafetensorsElements(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	writeSafetensors(t, p, map[string][]int64{"embed": {300, 64}, "norm": {64}, "scalar": {}})
	if n, err := SafetensorsElements(p); err != nil || n != 300*64+64+1 {
		t.Fatalf("elements %v, %v; want %d", n, err, 300*64+64+1)
	}
	for name, body := range map[string][]byte{
		"short":     {1, 2},
		"huge":      binary.LittleEndian.AppendUint64(nil, 1<<40),
		"truncated": append(binary.LittleEndian.AppendUint64(nil, 100), '{'),
		"not json":  append(binary.LittleEndian.AppendUint64(nil, 3), "abc"...),
		"negative":  append(binary.LittleEndian.AppendUint64(nil, 24), `{"x":{"shape":[-1,2]}}  `...),
	} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(f, body, 0o644)
		if _, err := SafetensorsElements(f); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %v, want one naming the file", name, err)
		}
	}
}

// Where the count comes from, in order: the server, the weights on this
// host (a directory or the Hugging Face cache), the declaration.
func TestModelParameters(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("HF_HOME", "")
	hub := t.TempDir()
	t.Setenv("HF_HUB_CACHE", hub)
	snap := filepath.Join(hub, "models--org--tiny", "snapshots", "abc123")
	os.MkdirAll(snap, 0o755)
	os.MkdirAll(filepath.Join(hub, "models--org--tiny", "refs"), 0o755)
	os.WriteFile(filepath.Join(hub, "models--org--tiny", "refs", "main"), []byte("abc123\n"), 0o644)
	writeSafetensors(t, filepath.Join(snap, "model-00001-of-00002.safetensors"), map[string][]int64{"a": {1000, 10}})
	writeSafetensors(t, filepath.Join(snap, "model-00002-of-00002.safetensors"), map[string][]int64{"b": {500}})
	// A second, older snapshot is not the one refs/main names.
	old := filepath.Join(hub, "models--org--tiny", "snapshots", "000old")
	os.MkdirAll(old, 0o755)
	writeSafetensors(t, filepath.Join(old, "model.safetensors"), map[string][]int64{"a": {7}})

	reports := 0.0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		meta := ""
		if reports > 0 {
			meta = fmt.Sprintf(`,"meta":{"n_params":%g}`, reports)
		}
		fmt.Fprintf(w, `{"object":"list","data":[{"id":"org/tiny","object":"model"%s}]}`, meta)
	}))
	defer srv.Close()
	cfg := func(model string, declared float64) *Config {
		return &Config{Kind: External, Endpoint: srv.URL, Model: model, ModelParameters: declared}
	}
	ctx := context.Background()
	for _, c := range []struct {
		name          string
		server        float64
		model         string
		declared      float64
		want          float64
		source, warns string
	}{
		{"server", 3301120, "org/tiny", 0, 3301120, "/v1/models", ""},
		{"hub cache", 0, "org/tiny", 0, 10500, "2 safetensors file(s) in " + snap, ""},
		{"local dir", 0, snap, 0, 10500, "safetensors", ""},
		{"declared", 0, "org/unknown", 8.03e9, 8.03e9, "declared", ""},
		{"declared against the server", 3301120, "org/tiny", 8.03e9, 8.03e9, "declared", "the server's /v1/models (meta.n_params) says 3.301e+06"},
		{"nothing", 0, "org/unknown", 0, 0, "", ""},
	} {
		reports = c.server
		n, src, warn := ModelParameters(ctx, cfg(c.model, c.declared))
		if n != c.want || !strings.Contains(src, c.source) || (c.warns == "") != (warn == "") || !strings.Contains(warn, c.warns) {
			t.Errorf("%s: %v from %q (warn %q); want %v from …%s… (warn …%s…)", c.name, n, src, warn, c.want, c.source, c.warns)
		}
	}
	// A quantised model's packed weights count as stored, and it says so.
	os.WriteFile(filepath.Join(snap, "config.json"), []byte(`{"quantization_config":{"quant_method":"gptq","bits":4}}`), 0o644)
	reports = 0
	if _, src, _ := ModelParameters(ctx, cfg(snap, 0)); !strings.Contains(src, "quantised") {
		t.Errorf("quantised model's source %q does not say so", src)
	}
}
