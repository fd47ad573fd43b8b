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
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "telegraf-"+TelegrafVersion)
	bin := filepath.Join(dir, "telegraf")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// The module's source, from the proxy, copied out of the read-only
	// module cache.
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/influxdata/telegraf@"+TelegrafVersion).Output()
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
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", telegrafTags, "-o", bin, "./cmd/telegraf")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, tail(out, 2000))
	}
	_ = os.RemoveAll(src)
	return bin, nil
}
