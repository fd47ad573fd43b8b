package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// nodePackages are the npm packages of the independent readers that test
// lem's exports (DuckDB for Parquet and CSV, Apache Arrow JS for Arrow IPC)
// and of chDB, a current ClickHouse engine in-process, against which the
// migrations and the documented SQL are checked (18.16 is the only server
// installable here).
var nodePackages = []string{"@duckdb/node-api@1.5.6-r.1", "apache-arrow@21.2.0", "chdb@3.4.0"}

var (
	nodeOnce sync.Once
	nodeDir  string
	nodeErr  error
)

// NodeModules returns a directory whose node_modules holds the reader
// packages, installing them with npm into the repository's .cache/npm the
// first time. Skips (LEM_E2E unset) or fails (LEM_E2E=1) without node/npm.
func NodeModules(t testing.TB) string {
	t.Helper()
	if os.Getenv("LEM_E2E") == "0" {
		t.Skip("LEM_E2E=0: tests needing node are off")
	}
	nodeOnce.Do(func() { nodeDir, nodeErr = installNode() })
	if nodeErr != nil {
		if os.Getenv("LEM_E2E") != "1" {
			t.Skipf("skipping: node readers unavailable: %v (LEM_E2E=1 makes this a failure)", nodeErr)
		}
		t.Fatalf("node readers: %v", nodeErr)
	}
	return nodeDir
}

func installNode() (string, error) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s not found", tool)
		}
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "npm")
	have := true
	for _, p := range []string{"@duckdb/node-api", "apache-arrow", "chdb"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", p)); err != nil {
			have = false
		}
	}
	if have {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"lem-test-readers","private":true}`+"\n"), 0o644); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", append([]string{"install", "--no-audit", "--no-fund"}, nodePackages...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install: %v: %s", err, tail(out, 1500))
	}
	return dir, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root not found")
		}
		dir = parent
	}
}
