package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	llamaOnce sync.Once
	llamaURL  string
	llamaErr  error
	llamaCmd  *exec.Cmd
)

// llamaRoot is where the llama.cpp root filesystem is built (reused).
const llamaRoot = "/var/tmp/lem-llama-root"

// LlamaServer returns the base URL of llama.cpp's real OpenAI-compatible
// llama-server on the CPU with a tiny random-weight model
// (shared/tools/llama-server), starting it on first use (setup ~1 min the
// first time on a machine). Gating follows LEM_E2E like ClickHouse.
func LlamaServer(t testing.TB) string {
	t.Helper()
	if os.Getenv("LEM_E2E") == "0" {
		t.Skip("LEM_E2E=0: tests needing llama-server are off")
	}
	llamaOnce.Do(func() { llamaURL, llamaErr = startLlama() })
	if llamaErr != nil {
		if os.Getenv("LEM_E2E") != "1" {
			t.Skipf("skipping: llama-server unavailable: %v (LEM_E2E=1 makes this a failure)", llamaErr)
		}
		t.Fatalf("llama-server: %v", llamaErr)
	}
	return llamaURL
}

func sharedTools() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "tools", "llama-server")
			if _, err := os.Stat(filepath.Join(p, "setup.sh")); err != nil {
				return "", fmt.Errorf("shared/tools/llama-server beside the repository: %w", err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root not found")
		}
		dir = parent
	}
}

var (
	setupOnce            sync.Once
	setupModel, setupErr = "", error(nil)
)

// llamaSetup builds the llama-server root filesystem once (setup.sh) and
// returns the model's path inside it.
func llamaSetup() (string, error) {
	setupOnce.Do(func() {
		if os.Geteuid() != 0 {
			setupErr = fmt.Errorf("needs root (debootstrap and chroot)")
			return
		}
		tools, err := sharedTools()
		if err != nil {
			setupErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "bash", filepath.Join(tools, "setup.sh"), llamaRoot).CombinedOutput()
		if err != nil {
			setupErr = fmt.Errorf("setup.sh: %v: %s", err, tail(out, 1500))
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		setupModel = strings.TrimPrefix(lines[len(lines)-1], llamaRoot)
	})
	return setupModel, setupErr
}

// LlamaRoot returns the root filesystem holding llama-server (entered with
// chroot, /proc mounted) and the model's path inside it, for tests that
// launch llama-server themselves. Same skip rules as LlamaServer.
func LlamaRoot(t testing.TB) (root, model string) {
	t.Helper()
	if os.Getenv("LEM_E2E") == "0" {
		t.Skip("LEM_E2E=0: tests needing llama-server are off")
	}
	model, err := llamaSetup()
	if err == nil {
		proc := filepath.Join(llamaRoot, "proc")
		if exec.Command("mountpoint", "-q", proc).Run() != nil {
			if out, merr := exec.Command("mount", "--bind", "/proc", proc).CombinedOutput(); merr != nil {
				err = fmt.Errorf("mounting /proc in %s: %v: %s", llamaRoot, merr, out)
			}
		}
	}
	if err != nil {
		if os.Getenv("LEM_E2E") != "1" {
			t.Skipf("skipping: llama-server unavailable: %v (LEM_E2E=1 makes this a failure)", err)
		}
		t.Fatalf("llama-server: %v", err)
	}
	return llamaRoot, model
}

func startLlama() (string, error) {
	tools, err := sharedTools()
	if err != nil {
		return "", err
	}
	model, err := llamaSetup()
	if err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("bash", filepath.Join(tools, "start.sh"), llamaRoot, model, fmt.Sprint(port), "-np", "4", "-c", "4096")
	logf, _ := os.CreateTemp("", "lem-llama-*.log")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	llamaCmd = cmd
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopLlama()
	b, _ := os.ReadFile(logf.Name())
	return "", fmt.Errorf("llama-server not healthy within 90 s: %s", tail(b, 1500))
}

func stopLlama() {
	if llamaCmd != nil && llamaCmd.Process != nil {
		_ = syscall.Kill(-llamaCmd.Process.Pid, syscall.SIGKILL)
		_ = llamaCmd.Wait()
		llamaCmd = nil
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
