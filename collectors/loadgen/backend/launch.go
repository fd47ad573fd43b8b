package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server is a launched backend process.
type Server struct {
	URL     string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	log     *os.File
	once    sync.Once
}

// Start writes the launch's files into dir, starts the process in its own
// process group with its output in logPath, and waits until baseURL+Health
// answers 200 — or the process exits, or timeout passes (then it is
// stopped and the error carries the log's tail).
func Start(ctx context.Context, l Launch, baseURL, dir, logPath string, timeout time.Duration) (*Server, error) {
	if len(l.Argv) == 0 {
		return nil, errors.New("empty command")
	}
	for name, body := range l.Files {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return nil, err
		}
	}
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(l.Argv[0], l.Argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), l.Env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", l.Argv[0], err)
	}
	s := &Server{URL: baseURL, LogPath: logPath, cmd: cmd, done: make(chan struct{}), log: lf}
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()
	if err := s.waitHealthy(ctx, baseURL+l.Health, timeout); err != nil {
		s.Stop(10 * time.Second)
		return nil, fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, logPath, tail(logPath, 20))
	}
	return s, nil
}

// Attach waits until an already running server answers health.
func Attach(ctx context.Context, baseURL, health string, timeout time.Duration) error {
	s := &Server{done: make(chan struct{})}
	return s.waitHealthy(ctx, baseURL+health, timeout)
}

func (s *Server) waitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("server exited before it was healthy: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("server not healthy at %s after %v", url, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Exited reports whether the process has ended (and how).
func (s *Server) Exited() (bool, error) {
	select {
	case <-s.done:
		return true, s.waitErr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the server's process group, then SIGKILL after
// grace. It is safe to call more than once.
func (s *Server) Stop(grace time.Duration) error {
	var err error
	s.once.Do(func() {
		defer s.log.Close()
		pgid := s.cmd.Process.Pid
		select {
		case <-s.done:
			return
		default:
		}
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
			err = fmt.Errorf("server ignored SIGTERM for %v: killed", grace)
		}
	})
	return err
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(string(bytes.Join(lines, []byte("\n"))))
}
