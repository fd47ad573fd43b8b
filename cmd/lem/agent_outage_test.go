package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// TestAgentThroughNATSOutage runs the real `lem agent` binary (simulated
// GPU, disk spool) against a NATS server that is down when the agent
// starts, comes up, goes down mid-run and comes back. The agent must keep
// collecting throughout (spooling while NATS is away) and every sample of
// its 20 ms grid, from its first to its last, must be stored exactly once.
func TestAgentThroughNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	bin := buildLem(t)
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	pq := filepath.Join(dir, "store")
	serve := &proc{t: t, name: "serve", args: []string{"serve", "-listen", natsAddr, "-parquet", pq, "-quiet"}}
	agent := &proc{t: t, name: "agent", args: []string{"agent", "-sim", "-nats", "nats://" + natsAddr, "-host", "h",
		"-spool", filepath.Join(dir, "spool"), "-publish-interval", "200ms", "-duration", "9s", "-metrics", ""}}
	defer func() {
		if t.Failed() {
			t.Logf("agent:\n%s\nserve:\n%s", tail(agent.out.String(), 3000), tail(serve.out.String(), 3000))
		}
	}()
	start := time.Now()
	agent.start(bin) // NATS is not there yet
	time.Sleep(2 * time.Second)
	serve.start(bin)
	time.Sleep(2500 * time.Millisecond)
	serve.signal(syscall.SIGKILL) // a crash mid-run: NATS and ingest gone at once
	time.Sleep(2 * time.Second)
	serve.start(bin)
	select {
	case <-agent.done:
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not finish")
	}
	if err := agent.exitErr(); err != nil {
		t.Fatalf("agent exited with %v", err)
	}
	stop := start.Add(9 * time.Second) // -duration
	if !strings.Contains(agent.out.String(), "agent: ") {
		t.Fatalf("agent did not report its run")
	}
	// serve drains ingest on SIGTERM.
	time.Sleep(1500 * time.Millisecond)
	serve.signal(syscall.SIGTERM)
	if err := serve.exitErr(); err != nil {
		t.Fatalf("serve exited with %v", err)
	}

	pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	if err := store.Parquet(pq).ReadTable(context.Background(), pw.Table(), schemas.Filter{From: 0, To: math.MaxInt64}); err != nil {
		t.Fatal(err)
	}
	ts := append([]int64(nil), pw.TS.V...)
	if len(ts) == 0 {
		t.Fatal("no power samples stored")
	}
	seen := map[int64]bool{}
	first, last := ts[0], ts[0]
	for _, x := range ts {
		if seen[x] {
			t.Fatalf("sample at %d stored twice", x)
		}
		seen[x] = true
		first, last = min(first, x), max(last, x)
	}
	const period = int64(20 * time.Millisecond)
	want := int((last-first)/period) + 1
	if len(ts) != want {
		t.Fatalf("%d samples stored between the first and the last, want %d on the 20 ms grid (lost %d)", len(ts), want, want-len(ts))
	}
	// The grid spans the agent's life: it started before NATS existed
	// and ran through the outage.
	if d := time.Unix(0, first).Sub(start); d < -time.Second || d > time.Second {
		t.Errorf("first sample %v after the agent started: the time before NATS came up is missing", d)
	}
	if d := stop.Sub(time.Unix(0, last)); d < -time.Second || d > 1500*time.Millisecond {
		t.Errorf("last sample %v before the agent stopped", d)
	}
	t.Logf("%d samples over %.1f s, none lost, none twice", len(ts), float64(last-first)/1e9)
}
