package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// The generated documents in docs/ must match what the binary produces;
// `make docs` refreshes them.
func TestGeneratedDocsUpToDate(t *testing.T) {
	for file, want := range map[string]string{"events.md": schemas.EventsMarkdown(), "cli.md": cliMarkdown()} {
		got, err := os.ReadFile(filepath.Join("..", "..", "docs", file))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("docs/%s is stale: run `make docs`", file)
		}
	}
}

func TestUnknownCommandAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"nope"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("code %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run(nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "demo") {
		t.Fatalf("usage: %s", out.String())
	}
	errb.Reset()
	if code := run([]string{"ingest", "-bogus"}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: code %d", code)
	}
}

// TestDemo drives the demo end to end on both stores with a short
// workload and checks that results and a dataset were produced.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	stores := map[string][]string{"parquet": {"-store", "parquet"}}
	if os.Getenv("LEM_E2E") != "0" {
		stores["clickhouse"] = []string{"-clickhouse", testenv.ClickHouse(t), "-database", "lem_demo_test"}
	}
	for name, extra := range stores {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"demo", "-out", dir, "-cycles", "2", "-requests", "8", "-output-tokens", "16",
				"-baseline", "1s", "-cooldown", "200ms", "-quiet"}, extra...)
			stdout := captureStdout(t, func() {
				var errb bytes.Buffer
				if code := run(args, os.Stdout, &errb); code != 0 {
					t.Fatalf("demo exited %d: %s", code, errb.String())
				}
			})
			for _, want := range []string{"J/token", "over 2 cycles", ",simulated", "dataset:"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("demo output lacks %q:\n%s", want, stdout)
				}
			}
			for _, f := range []string{"README.md", "results.json", "data/requests/part-00000.parquet", "data/power_samples/part-00000.parquet"} {
				if _, err := os.Stat(filepath.Join(dir, "dataset", f)); err != nil {
					t.Error(err)
				}
			}
			card, _ := os.ReadFile(filepath.Join(dir, "dataset", "README.md"))
			if !strings.HasPrefix(string(card), "---\nlicense:") || !strings.Contains(string(card), "config_name: requests") {
				t.Errorf("dataset card:\n%s", card)
			}
		})
	}
}

func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		done <- b.String()
	}()
	defer func() { os.Stdout = old }()
	f()
	w.Close()
	os.Stdout = old
	return <-done
}
