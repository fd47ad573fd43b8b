package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Miss skips a test that lacks something the machine should have, or
// fails it with LEM_E2E=1 (CI, make test), where nothing may be skipped.
func Miss(t testing.TB, format string, a ...any) {
	t.Helper()
	if os.Getenv("LEM_E2E") == "1" {
		t.Fatalf(format, a...)
	}
	t.Skipf(format+" (LEM_E2E=1 makes this a failure)", a...)
}

// Browser returns Debian's Chromium (LEM_CHROMIUM overrides) for tests
// that drive the platform's front end with playwright-core, installing the
// front end's npm packages in uiDir (platform/ui) when they are missing;
// it skips (fails with LEM_E2E=1) where the machine lacks them (make
// chromium; npm).
func Browser(t testing.TB, uiDir string) string {
	t.Helper()
	chromium := os.Getenv("LEM_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		Miss(t, "no Chromium at %s: install Debian's chromium (make chromium)", chromium)
	}
	if _, err := os.Stat(filepath.Join(uiDir, "node_modules", "playwright-core")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = uiDir
		if out, err := cmd.CombinedOutput(); err != nil {
			Miss(t, "npm ci in %s: %v: %s", uiDir, err, out)
		}
	}
	return chromium
}
