package backend

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ModelParameters finds how many parameters the served model has, and says
// where the number came from: the server's /v1/models (llama.cpp and lem's
// reference server report meta.n_params), else the safetensors headers of
// the weights on this host (a local model directory, or the model's
// snapshot in the Hugging Face cache), else what the configuration
// declares (backend.model_parameters). 0 and "" when nothing tells; a
// number is never guessed from a model's name. Where a declared count and
// a found one differ by more than 5%, warn says so.
func ModelParameters(ctx context.Context, b *Config) (n float64, source, warn string) {
	found, src := serverParameters(ctx, b.BaseURL(), b.Name())
	if found == 0 {
		found, src = localParameters(b.Model)
	}
	if d := b.ModelParameters; d > 0 {
		if found > 0 && math.Abs(found-d) > 0.05*d {
			warn = fmt.Sprintf("backend.model_parameters declares %.4g but %s says %.4g; the declared count is recorded", d, src, found)
		}
		return d, "declared (backend.model_parameters)", warn
	}
	return found, src, ""
}

// serverParameters reads meta.n_params of the served model from
// /v1/models (llama.cpp's field; lem's reference server reports it too).
func serverParameters(ctx context.Context, baseURL, model string) (float64, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/v1/models", nil)
	if err != nil {
		return 0, ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID   string `json:"id"`
			Meta struct {
				NParams float64 `json:"n_params"`
			} `json:"meta"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list) != nil {
		return 0, ""
	}
	for _, m := range list.Data {
		// The entry of the served model, or the only one.
		if (m.ID == model || len(list.Data) == 1) && m.Meta.NParams > 0 {
			return m.Meta.NParams, "the server's /v1/models (meta.n_params)"
		}
	}
	return 0, ""
}

// localParameters counts the tensor elements in the safetensors files of
// a model directory on this host: model itself when it is a directory, or
// its snapshot in the Hugging Face cache for a hub id. Quantised weights
// packed into wider integers count as stored, so the source says so when
// the model's config.json names a quantisation.
func localParameters(model string) (float64, string) {
	dir := model
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = hubSnapshot(model)
	}
	if dir == "" {
		return 0, ""
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if len(files) == 0 {
		return 0, ""
	}
	var total float64
	for _, f := range files {
		n, err := SafetensorsElements(f)
		if err != nil {
			return 0, ""
		}
		total += n
	}
	src := fmt.Sprintf("tensor elements in %d safetensors file(s) in %s", len(files), dir)
	if b, err := os.ReadFile(filepath.Join(dir, "config.json")); err == nil {
		var c struct {
			Q json.RawMessage `json:"quantization_config"`
		}
		if json.Unmarshal(b, &c) == nil && len(c.Q) > 0 && string(c.Q) != "null" {
			src += " (quantised: packed weights count as stored)"
		}
	}
	return total, src
}

// hubSnapshot is the directory of a hub id's snapshot in the Hugging Face
// cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub): the
// revision refs/main names, else the only one.
func hubSnapshot(id string) string {
	if strings.Count(id, "/") != 1 || strings.HasPrefix(id, "/") || strings.HasPrefix(id, ".") {
		return ""
	}
	var roots []string
	if v := os.Getenv("HF_HUB_CACHE"); v != "" {
		roots = append(roots, v)
	}
	if v := os.Getenv("HF_HOME"); v != "" {
		roots = append(roots, filepath.Join(v, "hub"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, ".cache", "huggingface", "hub"))
	}
	for _, root := range roots {
		repo := filepath.Join(root, "models--"+strings.ReplaceAll(id, "/", "--"))
		if ref, err := os.ReadFile(filepath.Join(repo, "refs", "main")); err == nil {
			if d := filepath.Join(repo, "snapshots", strings.TrimSpace(string(ref))); isDir(d) {
				return d
			}
		}
		snaps, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*"))
		sort.Strings(snaps)
		if len(snaps) == 1 && isDir(snaps[0]) {
			return snaps[0]
		}
	}
	return ""
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// maxSafetensorsHeader bounds the JSON header read (the format's own
// limit is 100 MB).
const maxSafetensorsHeader = 100 << 20

// SafetensorsElements sums the elements of every tensor a safetensors file
// declares in its header (8-byte little-endian length, then JSON: name →
// {dtype, shape, data_offsets}, and __metadata__), reading only the
// header.
func SafetensorsElements(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var size [8]byte
	if _, err := io.ReadFull(f, size[:]); err != nil {
		return 0, fmt.Errorf("%s: no safetensors header: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(size[:])
	if n == 0 || n > maxSafetensorsHeader {
		return 0, fmt.Errorf("%s: safetensors header of %d bytes", path, n)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return 0, fmt.Errorf("%s: safetensors header truncated: %w", path, err)
	}
	var tensors map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &tensors); err != nil {
		return 0, fmt.Errorf("%s: safetensors header: %w", path, err)
	}
	var total float64
	for name, raw := range tensors {
		if name == "__metadata__" {
			continue
		}
		var t struct {
			Shape []int64 `json:"shape"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return 0, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		e := 1.0
		for _, d := range t.Shape {
			if d < 0 {
				return 0, fmt.Errorf("%s: tensor %s: negative dimension", path, name)
			}
			e *= float64(d)
		}
		total += e
	}
	return total, nil
}
