package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	chstore "github.com/llm-energy-measure/lem/store/clickhouse"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/chserver"
	"github.com/llm-energy-measure/lem/internal/testenv"
)

// proc is one lem process of the fault test.
type proc struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error
	mu   sync.Mutex
}

// syncBuffer is a bytes.Buffer safe for the process's writes and our reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (p *proc) start(bin string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out == nil {
		p.out = &syncBuffer{}
	}
	fmt.Fprintf(p.out, "=== start %s\n", time.Now().Format("15:04:05.000"))
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	cmd, done := p.cmd, p.done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// TestFaultsWithRealProcesses publishes 1,000,000 power samples and
// 100,000 token events through separate lem processes — a NATS server
// (file store), ingest, and a publisher with a disk spool and a checkpoint
// — into ClickHouse, while: ingest is killed with SIGKILL 10 times and
// restarted; ClickHouse is stopped for 31 s and restarted; the NATS server
// restarts (the publisher spools meanwhile and drains after); the
// publisher is killed and restarted from its checkpoint. Afterwards every
// sample is in ClickHouse exactly once with the published checksum.
func TestFaultsWithRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	testenv.ClickHouse(t) // gating, like every ClickHouse test
	dir := t.TempDir()
	bin := buildLem(t)
	ctx := context.Background()
	chDir := filepath.Join(dir, "clickhouse")
	ch, err := chserver.Start(ctx, chserver.Options{Dir: chDir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ch.Stop() }()
	conn, err := chstore.Connect(ctx, chstore.Config{Addr: ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := chstore.Migrate(ctx, conn, "lem", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	natsURL := "nats://" + natsAddr
	nats := &proc{t: t, name: "nats", args: []string{"serve", "-listen", natsAddr, "-ingest=false", "-parquet", filepath.Join(dir, "js")}}
	ing := &proc{t: t, name: "ingest", args: []string{"ingest", "-nats", natsURL, "-clickhouse", ch.Addr(), "-metrics", "", "-flush-interval", "200ms", "-quiet"}}
	const samples, tokens = 1_000_000, 100_000
	pubArgs := []string{"loadtest", "-nats", natsURL, "-samples", fmt.Sprint(samples), "-tokens", fmt.Sprint(tokens),
		"-rate", "15000", "-spool", filepath.Join(dir, "spool"), "-checkpoint", filepath.Join(dir, "checkpoint")}
	pub := &proc{t: t, name: "publisher", args: pubArgs}
	nats.start(bin)
	time.Sleep(time.Second)
	ing.start(bin)
	time.Sleep(time.Second)
	pub.start(bin)
	defer func() {
		for _, p := range []*proc{pub, ing, nats} {
			p.signal(syscall.SIGKILL)
		}
	}()
	logs := func() string {
		var b strings.Builder
		for _, p := range []*proc{nats, ing, pub} {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", p.name, tail(p.out.String(), 1500))
		}
		return b.String()
	}

	// (a) ingest killed 10 times.
	for i := 0; i < 10; i++ {
		time.Sleep(1500 * time.Millisecond)
		ing.signal(syscall.SIGKILL)
		time.Sleep(200 * time.Millisecond)
		ing.start(bin)
	}
	// (b) ClickHouse down 31 s.
	port := ch.TCPPort
	ch.Stop()
	time.Sleep(31 * time.Second)
	if ch, err = chserver.Start(ctx, chserver.Options{Dir: chDir, TCPPort: port}); err != nil {
		t.Fatal(err)
	}
	// (c) the NATS server restarts; (e) meanwhile the publisher's spool
	// fills, and drains once NATS is back.
	nats.signal(syscall.SIGTERM)
	time.Sleep(4 * time.Second)
	spooled := dirSize(filepath.Join(dir, "spool"))
	nats.start(bin)
	// (d) the publisher is killed and restarted from its checkpoint.
	time.Sleep(4 * time.Second)
	pub.signal(syscall.SIGKILL)
	pub.start(bin)
	select {
	case <-pub.done:
		if err := pub.exitErr(); err != nil {
			t.Fatalf("publisher: %v\n%s", err, logs())
		}
	case <-time.After(4 * time.Minute):
		t.Fatalf("publisher did not finish\n%s", logs())
	}
	if spooled == 0 {
		t.Errorf("nothing was spooled while NATS was down\n%s", logs())
	}
	conn2, err := chstore.Connect(ctx, chstore.Config{Addr: ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	wantN, wantSum := loadGen{samples: samples, tokens: tokens, devices: 8, batch: 50}.expected()
	var n, distinct, toks uint64
	var sum int64
	for deadline := time.Now().Add(3 * time.Minute); ; {
		err := conn2.QueryRow(ctx, "SELECT count(), uniqExact(device_uuid, ts_ns), sum(power_mw) FROM lem.power_samples").Scan(&n, &distinct, &sum)
		if err == nil {
			err = conn2.QueryRow(ctx, "SELECT count() FROM lem.tokens").Scan(&toks)
		}
		if err == nil && n >= uint64(wantN) && toks >= tokens {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows: %d power (want %d), %d tokens (want %d), err %v\nmissing: %s\n%s", n, wantN, toks, tokens, err,
				missingRanges(ctx, conn2), logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a duplicate would land by now
	conn2.QueryRow(ctx, "SELECT count(), uniqExact(device_uuid, ts_ns), sum(power_mw) FROM lem.power_samples").Scan(&n, &distinct, &sum)
	conn2.QueryRow(ctx, "SELECT count() FROM lem.tokens").Scan(&toks)
	if n != uint64(wantN) || distinct != n || sum != wantSum || toks != tokens {
		t.Fatalf("after the faults: %d power rows (%d distinct), sum %d; want %d, sum %d; %d tokens, want %d\n%s",
			n, distinct, sum, wantN, wantSum, toks, tokens, logs())
	}
	t.Logf("1,000,000 samples + 100,000 token events exactly once through 10 ingest kills, a 31 s ClickHouse outage, "+
		"a NATS restart (%d bytes spooled) and a publisher restart", spooled)
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// missingRanges lists, per device, the sample index ranges absent from
// ClickHouse (diagnostics for a failure).
func missingRanges(ctx context.Context, conn interface {
	Query(ctx context.Context, q string, args ...any) (driver.Rows, error)
}) string {
	rows, err := conn.Query(ctx, "SELECT device_uuid, intDiv(ts_ns - "+fmt.Sprint(loadT0)+", 20000000) AS idx FROM lem.power_samples ORDER BY device_uuid, idx")
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	prevDev, prev := "", int64(-1)
	for rows.Next() {
		var d string
		var idx int64
		rows.Scan(&d, &idx)
		if d != prevDev {
			prevDev, prev = d, -1
		}
		if idx > prev+1 {
			fmt.Fprintf(&b, "%s [%d, %d) ", d, prev+1, idx)
		}
		prev = idx
	}
	return b.String()
}
