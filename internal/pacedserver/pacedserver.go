// Package pacedserver is an OpenAI-compatible streaming server for
// measuring a client's timestamps: it streams one-token chunks at
// absolute deadlines and logs, per request, when it got the request and
// when each chunk's flush returned. Tests and benchmarks run it in their
// own process, or as a process of its own (Main), as a user's server is.
package pacedserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Entry is what the server saw of one request: when its handler began,
// when the request's last bytes reached this host (the kernel's receive
// time, where the listener records it: 0 otherwise), and when each chunk's
// flush returned (ns since the epoch).
type Entry struct {
	Received int64   `json:"received"`
	Arrived  int64   `json:"arrived"`
	Flushed  []int64 `json:"flushed"`
}

// arrivalKey finds the connection of a request in its context.
type arrivalKey struct{}

// Server streams Tokens one-token chunks per request (max_tokens when the
// request sets it), the k-th at ITL·(k+1) after the request arrived.
// Requests are named by their Idempotency-Key header (lem's request id).
type Server struct {
	Tokens int
	ITL    time.Duration
	// Now is the clock of the log (nil: the wall clock).
	Now func() int64

	mu  sync.Mutex
	log map[string]Entry
}

func (s *Server) now() int64 {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now().UnixNano()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := s.now()
	start := time.Now()
	id := r.Header.Get("Idempotency-Key")
	var body struct {
		MaxTokens int `json:"max_tokens"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	var arrived int64 // the body is read: the latest read carried its end
	if c, ok := r.Context().Value(arrivalKey{}).(interface{ LastArrival() int64 }); ok {
		arrived = c.LastArrival()
	}
	n := s.Tokens
	if body.MaxTokens > 0 {
		n = body.MaxTokens
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	flushed := make([]int64, 0, n)
	for i := 0; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i+1) * s.ITL)); d > 0 {
			time.Sleep(d)
		}
		fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"text\":\"t%d\"}]}\n\n", i)
		fl.Flush()
		flushed = append(flushed, s.now())
	}
	s.mu.Lock()
	if s.log == nil {
		s.log = map[string]Entry{}
	}
	s.log[id] = Entry{Received: received, Arrived: arrived, Flushed: flushed} // before the stream ends, so the client finds it
	s.mu.Unlock()
	fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n", n)
	fl.Flush()
}

// Log returns a copy of what the server saw, by request id.
func (s *Server) Log() map[string]Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Entry, len(s.log))
	for k, v := range s.log {
		out[k] = v
	}
	return out
}

// Handler serves the completions endpoints, GET /log (the log as JSON) and
// GET /cpu (this process's CPU seconds, user and system).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", s)
	mux.HandleFunc("/log", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(s.Log()) })
	mux.HandleFunc("/cpu", func(w http.ResponseWriter, _ *http.Request) {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		fmt.Fprint(w, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds())
	})
	return mux
}

// Environment of a process run as the server (Main).
const (
	EnvAddrFile = "LEM_PACED_SERVER_ADDR_FILE" // where to write the listening address
	EnvTokens   = "LEM_PACED_SERVER_TOKENS"    // chunks per request without max_tokens (20)
	EnvITL      = "LEM_PACED_SERVER_ITL"       // time between chunks (50ms)
)

// Main serves on a free loopback port, writes the address to the file
// named by EnvAddrFile and serves until killed. It returns an exit code.
func Main() int {
	s := &Server{Tokens: 20, ITL: 50 * time.Millisecond}
	if v := os.Getenv(EnvTokens); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "%s=%q: want a positive whole number\n", EnvTokens, v)
			return 2
		}
		s.Tokens = n
	}
	if v := os.Getenv(EnvITL); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "%s=%q: want a positive duration\n", EnvITL, v)
			return 2
		}
		s.ITL = d
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile(os.Getenv(EnvAddrFile), []byte(ln.Addr().String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: s.Handler(), ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, arrivalKey{}, c)
	}}
	_ = srv.Serve(listenArrivals(ln))
	return 0
}

// Spawn runs the calling test binary again as the server (its TestMain
// must call Main when EnvAddrFile is set), with the extra environment
// given, and returns the server's base URL; the process is killed when
// the test ends.
func Spawn(tb testing.TB, env ...string) string {
	tb.Helper()
	addrFile := filepath.Join(tb.TempDir(), "addr")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), EnvAddrFile+"="+addrFile), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 400; i++ {
		if addr, _ := os.ReadFile(addrFile); len(addr) > 0 {
			return "http://" + string(addr)
		}
		time.Sleep(25 * time.Millisecond)
	}
	tb.Fatal("the paced server did not start within 10 s")
	return ""
}

// Fetch reads the log and CPU seconds of a server Spawn started.
func Fetch(url string) (map[string]Entry, float64, error) {
	var log map[string]Entry
	if err := getJSON(url+"/log", &log); err != nil {
		return nil, 0, err
	}
	var cpu float64
	if err := getJSON(url+"/cpu", &cpu); err != nil {
		return nil, 0, err
	}
	return log, cpu, nil
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
