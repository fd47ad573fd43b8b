package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The peer pipeline of the benchmarks (docs/benchmarks.md): Telegraf,
// built from the Go module proxy with only the plugins the comparison
// needs (JetStream consumer, influx line protocol, SQL output with
// clickhouse-go).
const (
	TelegrafVersion = "v1.37.2"
	telegrafTags    = "custom,inputs.nats_consumer,outputs.sql,parsers.influx"
)

var (
	telegrafOnce sync.Once
	telegrafBin  string
	telegrafErr  error
)

// Telegraf returns the path of a telegraf binary, building it into the
// repository's .cache the first time (a few minutes: it downloads
// Telegraf's modules). Benchmarks only; it fails rather than skips.
func Telegraf(tb testing.TB) string {
	tb.Helper()
	telegrafOnce.Do(func() { telegrafBin, telegrafErr = buildTelegraf() })
	if telegrafErr != nil {
		tb.Fatalf("building the peer pipeline (telegraf %s): %v", TelegrafVersion, telegrafErr)
	}
	return telegrafBin
}

func buildTelegraf() (string, error) {
	return buildFromProxy("github.com/influxdata/telegraf", TelegrafVersion, "./cmd/telegraf", "telegraf", telegrafTags)
}

// buildFromProxy builds a program of a module version from the Go module
// proxy into the repository's .cache (once: later calls reuse the
// binary): the module's source copied out of the read-only module cache,
// built as its own module with its own dependencies, without cgo.
func buildFromProxy(module, version, pkg, name, tags string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", name+"-"+version)
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download: %w", err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download: %s %v", mod.Error, err)
	}
	src := filepath.Join(dir, "src")
	_ = os.RemoveAll(src)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-r", mod.Dir, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copying sources: %v: %s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "chmod", "-R", "u+w", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("chmod: %v: %s", err, out)
	}
	args := []string{"build"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", bin, pkg)...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, tail(out, 2000))
	}
	_ = os.RemoveAll(src)
	return bin, nil
}
