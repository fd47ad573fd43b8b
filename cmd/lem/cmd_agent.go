package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/spool"
	"github.com/llm-energy-measure/lem/store"
)

func init() {
	register(&command{
		name: "agent",
		summary: "Collect GPU power, energy and state on this host (NVML, or -sim) and publish to NATS; " +
			"without -nats, run an embedded JetStream with in-process ingest into -parquet or -clickhouse.",
		setup: newAgentCmd,
	})
}

func runAgent(ctx context.Context, cols []collectors.Collector, natsURL string, natsOpts []nats.Option, natsDir, spoolDir string, spoolMax int64, metricsAddr string,
	sc store.Config, log zerolog.Logger) error {
	var nc *nats.Conn
	var err error
	stop := func() {}
	if natsURL != "" {
		nc, err = bus.Connect(natsURL, "lem-agent", log, natsOpts...)
		if err != nil {
			return err
		}
		defer nc.Close()
	} else {
		var bb *backbone
		if bb, err = startBackbone("", "", natsDir, sc, log); err != nil {
			return err
		}
		nc, stop = bb.nc, bb.stop
	}
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		stop()
		return err
	}
	var sp *spool.Spool
	if natsURL != "" {
		if sp, err = spool.Open(spoolDir, spoolMax); err != nil {
			return err
		}
		defer sp.Close()
		if n, _, _ := sp.Stats(); n > 0 {
			log.Info().Int64("events", n).Msg("spooled events from an earlier run will be sent")
		}
		pub.UseSpool(sp)
		dctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go pub.Drain(dctx)
	}
	reg := newRegistry()
	registerAgentMetrics(reg, pub, sp)
	defer serveMetrics(metricsAddr, reg, log)()
	errs := make(chan error, len(cols))
	for _, c := range cols {
		go func() { errs <- c.Run(ctx, pub) }()
	}
	var runErr error
	for range cols {
		if err := <-errs; err != nil && runErr == nil {
			runErr = err
		}
	}
	fctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pub.Flush(fctx); err != nil && runErr == nil {
		runErr = err
	}
	if sp != nil {
		if n, _, dropped := sp.Stats(); n > 0 || dropped > 0 {
			log.Warn().Int64("spooled", n).Uint64("dropped", dropped).Msg("events left in the spool (sent on next start) / dropped because it was full")
		}
	}
	stop()
	if errors.Is(runErr, context.Canceled) || errors.Is(runErr, context.DeadlineExceeded) {
		return nil
	}
	return runErr
}

func parseIndices(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-devices: %q is not an index", f)
		}
		out = append(out, i)
	}
	return out, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// registerAgentMetrics exposes the publisher's and the spool's counters.
func registerAgentMetrics(reg *prometheus.Registry, pub *bus.Publisher, sp *spool.Spool) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lem_agent_published_messages_total",
			Help: "Event batches handed to NATS or the spool."}, func() float64 { m, _ := pub.Published(); return float64(m) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lem_agent_published_bytes_total",
			Help: "Encoded bytes handed to NATS."}, func() float64 { _, b := pub.Published(); return float64(b) }),
	)
	if sp == nil {
		return
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lem_agent_spool_events",
			Help: "Event batches waiting in the on-disk spool."}, func() float64 { n, _, _ := sp.Stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lem_agent_spool_bytes",
			Help: "Bytes held by the on-disk spool."}, func() float64 { _, b, _ := sp.Stats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lem_agent_spool_dropped_total",
			Help: "Event batches dropped because the spool was full."}, func() float64 { _, _, d := sp.Stats(); return float64(d) }),
	)
}

// agentCmd holds the flags of `lem agent`.
type agentCmd struct {
	fs             *flag.FlagSet
	natsURL        *string
	devs           *string
	useSim         *bool
	duration       *time.Duration
	publish        *time.Duration
	counter        *time.Duration
	counterBudget  *float64
	host           *string
	spoolDir       *string
	spoolMax       *int64
	cpuProfile     func() (stop func(), err error)
	metricsAddr    *string
	raplRoot       *string
	alsoInstant    *bool
	alignedCounter *bool
	stc            func() store.Config
	natsOpts       func() ([]nats.Option, error)
	logger         func() zerolog.Logger
}

// newAgentCmd registers the flags of `lem agent` on fs.
func newAgentCmd(fs *flag.FlagSet) func([]string) error {
	opt := &agentCmd{
		fs:             fs,
		natsURL:        fs.String("nats", "", "NATS URL to publish to (empty: embedded server plus in-process ingest)"),
		devs:           fs.String("devices", "", "comma-separated GPU indices (empty: all)"),
		useSim:         fs.Bool("sim", false, "publish the simulator instead of NVML (labelled source=sim)"),
		duration:       fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)"),
		publish:        fs.Duration("publish-interval", time.Second, "read counter and buffer and publish this often"),
		counter:        fs.Duration("counter-interval", time.Second, "shortest energy-counter read period (100ms = the counter's full resolution)"),
		counterBudget:  fs.Float64("counter-cpu-budget", 0.004, "agent CPU share target per GPU; the counter period stretches (up to 10 s) while above it (negative: no limit)"),
		host:           fs.String("host", "", "host name to publish under (default: the OS host name)"),
		spoolDir:       fs.String("spool", "lem-agent-spool", "with -nats: directory of the on-disk buffer used while NATS is unreachable"),
		spoolMax:       fs.Int64("spool-max-bytes", 256<<20, "size bound of the spool; when full the oldest events are dropped and counted"),
		cpuProfile:     profileFlag(fs, "the agent"),
		metricsAddr:    fs.String("metrics", "127.0.0.1:9465", "listen address of /metrics (empty: off)"),
		raplRoot:       fs.String("rapl", "/sys/class/powercap", "powercap root for CPU/DRAM energy (empty: off)"),
		alsoInstant:    fs.Bool("instant", false, "also read instant power (field 186) at 10 Hz beside the buffer, for validation"),
		alignedCounter: fs.Bool("aligned-counter", true, "read the energy counter aligned to its 100 ms refresh (stamped within a few ms, source nvml.counter.aligned); -aligned-counter=false reads it whenever its timer fires (value 0-100 ms old, ±50 ms)"),
		stc:            storeFlags(fs, "lem-agent-store", "with the embedded server: Parquet store directory (unless -clickhouse)"),
		natsOpts:       natsFlags(fs),
		logger:         logFlags(fs),
	}
	return opt.run
}

func (opt *agentCmd) run(_ []string) error {
	log := opt.logger()
	nopts, err := opt.natsOpts()
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	if *opt.duration > 0 {
		ctx, cancel = context.WithTimeout(ctx, *opt.duration)
		defer cancel()
	}
	if *opt.host == "" {
		*opt.host, _ = os.Hostname()
	}
	cc := collectorConfig{GPU: "nvml", SimDevices: 1, RAPL: *opt.raplRoot, Publish: *opt.publish, Counter: *opt.counter,
		CounterBudget: *opt.counterBudget, AlsoInstant: *opt.alsoInstant, AlignedCounter: opt.alignedCounter, AllowNoGPU: true}
	if cc.Devices, err = parseIndices(*opt.devs); err != nil {
		return err
	}
	if *opt.raplRoot == "" {
		cc.RAPL = "off"
	}
	if *opt.useSim {
		cc.GPU, cc.RAPL = "sim", "off"
	}
	oc, err := openCollectors(cc, *opt.host, log)
	if err != nil {
		return err
	}
	defer oc.close()
	cols, rd := oc.collectors, oc.nvml
	stop, err := opt.cpuProfile()
	if err != nil {
		return err
	}
	defer stop()
	start, cpu0 := time.Now(), cpuTime()
	err = runAgent(ctx, cols, *opt.natsURL, nopts, opt.fs.Lookup("parquet").Value.String()+".nats", *opt.spoolDir, *opt.spoolMax, *opt.metricsAddr, opt.stc(), log)
	wall, cpu := time.Since(start), cpuTime()-cpu0
	what := "agent"
	if *opt.natsURL == "" {
		what = "agent with embedded backbone"
	}
	if rd != nil {
		for _, g := range rd.GPUs {
			c, _ := g.Clock(time.Now().UnixNano())
			fmt.Printf("gpu %d: counter reads bracketed %d, predicted %d, missed %d, refresh period %.3f ms, jitter %.2f ms; "+
				"driver clock offset %.3f ms in [%.3f, %.3f] from %d reads, applied %.3f ms\n",
				g.ID.Index, g.Refresh.Aligned, g.Refresh.Predicted, g.Refresh.Missed, float64(g.Refresh.Period())/1e6, float64(g.Refresh.Jitter())/1e6,
				float64(c.Offset)/1e6, float64(c.Low)/1e6, float64(c.High)/1e6, c.Reads, float64(c.Applied)/1e6)
		}
	}
	fmt.Printf("%s: %.1f s wall, %.3f s CPU (%.3f%% of one core)\n", what,
		wall.Seconds(), cpu.Seconds(), 100*cpu.Seconds()/wall.Seconds())
	return err

}
