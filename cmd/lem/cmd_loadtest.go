package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/spool"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

func init() {
	register(&command{
		name: "loadtest",
		summary: "Publish a deterministic synthetic stream (power samples and token events) for benchmarks and fault " +
			"tests; resumable from a checkpoint, spooling to disk while NATS is unreachable.",
		setup: newLoadtestCmd,
	})
}

func writeAtomic(path, body string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadGen is the deterministic stream: power batches round-robin over
// devices, then token batches; batch i is always the same message.
type loadGen struct{ samples, tokens, devices, batch int }

const loadT0 = int64(1_795_700_000_000_000_000) // fixed epoch of the stream

func (g loadGen) powerBatches() int { return (g.samples + g.batch - 1) / g.batch }
func (g loadGen) tokenBatches() int { return (g.tokens + 99) / 100 }
func (g loadGen) batches() int      { return g.powerBatches() + g.tokenBatches() }

func (g loadGen) samplesBefore(i int) int { return min(i, g.powerBatches()) * g.batch }

func loadPower(dev, idx int) schemas.Power {
	return schemas.Power(100_000 + (dev*7919+idx*104729)%600_000)
}

func (g loadGen) batchAt(i int) (string, string, schemas.Event) {
	if i < g.powerBatches() {
		dev, k := i%g.devices, i/g.devices
		b := &schemas.PowerBatch{Origin: schemas.Origin{Host: "loadtest", Source: "sim"},
			Device: schemas.Device{Index: uint32(dev), UUID: fmt.Sprintf("LOAD-%d", dev), Name: "loadtest (not a measurement)"}}
		n := min(g.batch, g.samples-i*g.batch)
		for s := 0; s < n; s++ {
			idx := k*g.batch + s
			b.Samples = append(b.Samples, schemas.PowerSample{TS: loadT0 + int64(idx)*20e6, Power: loadPower(dev, idx)})
		}
		return schemas.DeviceSubject(schemas.KindPower, "loadtest", uint32(dev)), fmt.Sprintf("lt/p/%d", i), b
	}
	j := i - g.powerBatches()
	tb := &schemas.TokenBatch{RunID: "loadtest", RequestIDs: []string{fmt.Sprintf("q%d", j)}}
	n := min(100, g.tokens-j*100)
	for k := 0; k < n; k++ {
		tb.Tokens = append(tb.Tokens, schemas.Token{Request: 0, Index: uint32(k), TS: loadT0 + int64(j*100+k)*1e6, Tokens: 1})
	}
	return schemas.RunSubject(schemas.KindToken, "loadtest"), fmt.Sprintf("lt/t/%d", j), tb
}

// expected returns the stream's sample count and power sum.
func (g loadGen) expected() (int, int64) {
	var sum int64
	n := 0
	for i := 0; i < g.powerBatches(); i++ {
		_, _, ev := g.batchAt(i)
		for _, s := range ev.(*schemas.PowerBatch).Samples {
			sum += int64(s.Power)
			n++
		}
	}
	return n, sum
}

// loadtestCmd holds the flags of `lem loadtest`.
type loadtestCmd struct {
	natsURL    *string
	samples    *int
	tokens     *int
	devices    *int
	batch      *int
	rate       *float64
	spoolDir   *string
	spoolMax   *int64
	checkpoint *string
	natsOpts   func() ([]nats.Option, error)
}

// newLoadtestCmd registers the flags of `lem loadtest` on fs.
func newLoadtestCmd(fs *flag.FlagSet) func([]string) error {
	opt := &loadtestCmd{
		natsURL:    fs.String("nats", "nats://127.0.0.1:4222", "NATS URL(s)"),
		samples:    fs.Int("samples", 1_000_000, "power samples to publish (in batches of -batch per device)"),
		tokens:     fs.Int("tokens", 100_000, "token events to publish (batches of 100)"),
		devices:    fs.Int("devices", 8, "simulated devices"),
		batch:      fs.Int("batch", 50, "samples per power batch (one device-second at 50 Hz)"),
		rate:       fs.Float64("rate", 0, "samples per second (0: as fast as acknowledged)"),
		spoolDir:   fs.String("spool", "", "directory of the on-disk spool used while NATS is unreachable (empty: none)"),
		spoolMax:   fs.Int64("spool-max-bytes", 1<<30, "size bound of the spool"),
		checkpoint: fs.String("checkpoint", "", "file recording the next batch after acknowledged ones, to resume from after a restart"),
		natsOpts:   natsFlags(fs),
	}
	return opt.run
}

func (opt *loadtestCmd) run(_ []string) error {
	nopts, err := opt.natsOpts()
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	nc, err := bus.Connect(*opt.natsURL, "lem-loadtest", zerolog.Nop(), nopts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		return err
	}
	var sp *spool.Spool
	if *opt.spoolDir != "" {
		if sp, err = spool.Open(*opt.spoolDir, *opt.spoolMax); err != nil {
			return err
		}
		defer sp.Close()
		pub.UseSpool(sp)
		dctx, stop := context.WithCancel(context.Background())
		defer stop()
		go pub.Drain(dctx)
	}
	g := loadGen{samples: *opt.samples, tokens: *opt.tokens, devices: *opt.devices, batch: *opt.batch}
	start := 0
	if *opt.checkpoint != "" {
		if b, err := os.ReadFile(*opt.checkpoint); err == nil {
			start, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	total := g.batches()
	began := time.Now()
	for i := start; i < total; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		subj, id, ev := g.batchAt(i)
		if err := pub.Publish(subj, id, ev); err != nil {
			return err
		}
		if *opt.rate > 0 {
			due := began.Add(time.Duration(float64(g.samplesBefore(i+1-start)) / *opt.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		if *opt.checkpoint != "" && (i+1)%200 == 0 {
			// Acknowledged (or spooled) up to here: a restart
			// resumes after it; anything repeated is dropped
			// by JetStream's message-id deduplication.
			fctx, c := context.WithTimeout(ctx, time.Minute)
			err := pub.Flush(fctx)
			c()
			if err != nil {
				return err
			}
			if err := writeAtomic(*opt.checkpoint, strconv.Itoa(i+1)); err != nil {
				return err
			}
		}
	}
	fctx, c := context.WithTimeout(ctx, 5*time.Minute)
	defer c()
	for sp != nil {
		if n, _, _ := sp.Stats(); n == 0 {
			break
		}
		if fctx.Err() != nil {
			return errors.New("spool not drained within 5 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pub.Flush(fctx); err != nil {
		return err
	}
	if *opt.checkpoint != "" {
		_ = writeAtomic(*opt.checkpoint, strconv.Itoa(total))
	}
	n, sum := g.expected()
	fmt.Printf("published %d power samples (sum %d mW) and %d token events in %d batches\n", n, sum, g.tokens, total)
	return nil

}
