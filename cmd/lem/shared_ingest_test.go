package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

// TestSharedIngestKills: three `lem ingest -shared` processes share the
// consumers of one NATS server, each event kind held by one of them under
// a lease (ADR 0017). While power events stream in, the process holding
// power is SIGKILLed (its lease expires and another takes power over from
// the store's watermark), a new process joins, the next holder of power
// stops cleanly (SIGTERM: it stores what it took and releases power at
// once), the next is frozen (SIGSTOP) past its lease and thawed after
// another took power over, and another is SIGKILLed. ClickHouse ends with
// every sample once.
func TestSharedIngestKills(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	db, conn := testenv.FreshDatabase(t)
	chAddr := testenv.ClickHouse(t)
	bin := buildLem(t)
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startProc(t, bin, "serve", "-ingest=false", "-listen", natsAddr, "-parquet", filepath.Join(dir, "serve"), "-log-format", "console")
	ctx := context.Background()
	nc, err := bus.Connect("nats://"+natsAddr, "shared-test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the streams", time.Minute, func() bool { return bus.EnsureStreams(ctx, js, bus.StreamConfig{}) == nil })

	procs := map[string]*bgProc{}
	var all []*bgProc
	start := func(name string) {
		p := startProc(t, bin, deploy.Ingest{NATS: "nats://" + natsAddr, StreamReplicas: "1", ClickHouse: chAddr, Database: db,
			Extra: []string{"-instance", name, "-lease-ttl", "2s", "-flush-interval", "2s", "-log-format", "console"}}.Args()...)
		procs[name] = p
		all = append(all, p)
	}
	for _, name := range []string{"i1", "i2", "i3"} {
		start(name)
	}
	spread := func(h map[string]string) string {
		by := map[string][]string{}
		for k, p := range h {
			by[p] = append(by[p], k)
		}
		var out []string
		for p, ks := range by {
			sort.Strings(ks)
			out = append(out, p+": "+strings.Join(ks, " "))
		}
		sort.Strings(out)
		return strings.Join(out, "; ")
	}
	// holders reads who holds each kind, once every kind is held by a
	// process alive and every process alive holds some (the kinds are
	// spread: each takes its share).
	holders := func(what string) map[string]string {
		t.Helper()
		var h map[string]string
		waitFor(t, what, 2*time.Minute, func() bool {
			kv, err := js.KeyValue(ctx, ingest.BucketLeases)
			if err != nil {
				return false
			}
			h = map[string]string{}
			for _, k := range schemas.Kinds {
				e, err := kv.Get(ctx, "k.ingest."+k.String())
				if err != nil || procs[string(e.Value())] == nil {
					return false
				}
				h[k.String()] = string(e.Value())
			}
			return len(strings.Split(spread(h), ";")) == len(procs)
		})
		return h
	}
	h := holders("every kind held, spread over the three")
	t.Logf("leases: %s", spread(h))

	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	const perEvent, events = 500, 2000 // 1 M samples
	pw := newPowerEvents(pub, perEvent)
	stop := func(name string, sig syscall.Signal) {
		t.Helper()
		t.Logf("%s to %s (holding power)", sig, name)
		p := procs[name]
		delete(procs, name)
		p.cmd.Process.Signal(sig)
		if err := p.cmd.Wait(); err != nil && sig == syscall.SIGTERM {
			t.Errorf("%s after SIGTERM: %v\n%s", name, err, p.String())
		}
	}
	step := events / 4
	pw.publish(t, 0, step)
	pw.flush(t)
	stop(h["power"], syscall.SIGKILL)
	pw.publish(t, step, 2*step)
	pw.flush(t)
	start("i4")
	h = holders("power taken over")
	t.Logf("leases: %s", spread(h))
	pw.publish(t, 2*step, 3*step)
	pw.flush(t)
	stop(h["power"], syscall.SIGTERM)
	h = holders("power taken over again")
	t.Logf("leases: %s", spread(h))
	// Freeze the holder of power mid-stream, past its lease, while it
	// holds rows not yet stored (ingest flushes every 2 s here): another
	// takes power over and stores them from the watermark on; thawed, the
	// frozen one must store nothing of what it held (its fence, checked
	// before each insert and, should it be frozen mid-insert, before each
	// chunk sent: ADR 0019, whose own test freezes a writer mid-insert
	// every time), or those rows would be there twice.
	pw.publish(t, 3*step, 3*step+step/2)
	pw.flush(t)
	frozen, fp := h["power"], procs[h["power"]]
	t.Logf("SIGSTOP to %s (holding power)", frozen)
	fp.cmd.Process.Signal(syscall.SIGSTOP)
	delete(procs, frozen)
	h = holders("power taken over from the frozen process")
	t.Logf("leases: %s", spread(h))
	q := fmt.Sprintf("SELECT count(), sum(power_mw), uniqExact(device_uuid, ts_ns) FROM %s.power_samples", db)
	var n, distinct uint64
	var sum int64
	waitFor(t, "the new holder to store what the frozen one held", 2*time.Minute, func() bool {
		return conn.QueryRow(ctx, q).Scan(&n, &sum, &distinct) == nil && n >= uint64(3*step+step/2)*perEvent
	})
	fp.cmd.Process.Signal(syscall.SIGCONT)
	procs[frozen] = fp
	waitFor(t, "the thawed process to stand down", time.Minute, func() bool {
		return strings.Contains(fp.String(), "lease lost") || strings.Contains(fp.String(), "lease not renewed in time")
	})
	pw.publish(t, 3*step+step/2, events)
	pw.flush(t)
	h = holders("the thawed process back among the holders")
	t.Logf("leases: %s", spread(h))
	for name := range procs {
		if name != h["power"] && name != frozen {
			stop(name, syscall.SIGKILL)
			break
		}
	}

	waitFor(t, "every sample in ClickHouse", 3*time.Minute, func() bool {
		return conn.QueryRow(ctx, q).Scan(&n, &sum, &distinct) == nil && n >= events*perEvent
	})
	time.Sleep(time.Second) // a duplicate would land by now
	if err := conn.QueryRow(ctx, q).Scan(&n, &sum, &distinct); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, %d samples: ClickHouse holds %d rows (%d distinct), sum %d (want %d)", events, events*perEvent, n, distinct, sum, pw.sum)
	if n != events*perEvent || distinct != n || sum != pw.sum {
		for _, p := range all {
			t.Log(p.String())
		}
		t.Fatalf("after the kills: %d rows, %d distinct, sum %d; want %d rows, sum %d", n, distinct, sum, events*perEvent, pw.sum)
	}
}
