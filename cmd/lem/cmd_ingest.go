package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/store"
)

func init() {
	register(&command{
		name:    "ingest",
		summary: "Consume events from JetStream into ClickHouse (-clickhouse) or the local Parquet store (-parquet).",
		setup:   newIngestCmd,
	})
}

// newRegistry returns a registry with the Go and process collectors
// (process_cpu_seconds_total is how a daemon's own cost is watched).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics on addr (empty: off) and returns its stop.
func serveMetrics(addr string, reg *prometheus.Registry, log zerolog.Logger) func() {
	if addr == "" {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("addr", addr).Msg("metrics server failed")
		}
	}()
	return func() { srv.Close() }
}

// ingestCmd holds the flags of `lem ingest`.
type ingestCmd struct {
	natsURL   *string
	metrics   *string
	prefix    *string
	flush     *time.Duration
	batchRows *int
	batchMiB  *int
	replicas  *int
	shared    *bool
	leaseTTL  *time.Duration
	instance  *string
	stc       func() store.Config
	natsOpts  func() ([]nats.Option, error)
	logger    func() zerolog.Logger
}

// newIngestCmd registers the flags of `lem ingest` on fs.
func newIngestCmd(fs *flag.FlagSet) func([]string) error {
	opt := &ingestCmd{
		natsURL:   fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated"),
		metrics:   fs.String("metrics", "127.0.0.1:9464", "listen address of /metrics (empty: off)"),
		prefix:    fs.String("consumer-prefix", "ingest", "durable consumer name prefix (one per sink)"),
		flush:     fs.Duration("flush-interval", time.Second, "flush each table at least this often"),
		batchRows: fs.Int("batch-rows", 500_000, fmt.Sprintf("flush a table at this many rows (at most %d)", ingest.MaxBatchRows)),
		batchMiB:  fs.Int("batch-mib", 64, fmt.Sprintf("flush a table when its rows hold this many MiB (at most %d); row memory stays under 2 x kinds x this", ingest.MaxBatchBytes>>20)),
		replicas:  fs.Int("stream-replicas", 1, "replicas of the JetStream streams when ingest creates them (3 on a 3-node cluster)"),
		shared:    fs.Bool("shared", false, "share the consumers with other `lem ingest -shared` processes: each event kind is ingested by one process at a time, held by a lease, and taken over when that process stops or dies (ClickHouse only; ADR 0017)"),
		leaseTTL:  fs.Duration("lease-ttl", 10*time.Second, "with -shared: how long a lease lasts unrenewed; a dead process's kinds resume after about twice this"),
		instance:  fs.String("instance", "", "with -shared: this process's name among the sharers (default host-pid)"),
		stc:       storeFlags(fs, "", "write the local Parquet store under this directory instead of ClickHouse"),
		natsOpts:  natsFlags(fs),
		logger:    logFlags(fs),
	}
	return opt.run
}

func (opt *ingestCmd) run(_ []string) error {
	log := opt.logger()
	sc := opt.stc()
	if err := sc.Validate(); err != nil {
		return err
	}
	if *opt.shared && sc.Parquet != "" {
		return errors.New("-shared needs ClickHouse (-clickhouse): the Parquet store is one process's directory")
	}
	if *opt.leaseTTL < time.Second {
		return fmt.Errorf("-lease-ttl %s: at least 1s", *opt.leaseTTL)
	}
	nopts, err := opt.natsOpts()
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	nc, err := bus.Connect(*opt.natsURL, "lem-ingest", log, nopts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// NATS down at start is waited for, like the store below.
	if err := bus.WaitConnected(ctx, nc); err != nil {
		return nil
	}
	// A cluster electing its leaders (a node restarting, one lost) answers
	// nothing for a while: wait and try again, as for a store that is down.
	for backoff := 500 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Replicas: *opt.replicas})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if !bus.Transient(err) {
			return err
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("JetStream not ready for the streams")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
	// A store that is down at start is waited for, as one that
	// goes down later is: events wait in JetStream meanwhile.
	var sink *store.Store
	for backoff := 500 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		if sink, err = openStore(ctx, sc, true, log); err == nil {
			break
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("store unavailable")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
	defer sink.Close()
	reg := newRegistry()
	m := ingest.NewMetrics(reg)
	defer serveMetrics(*opt.metrics, reg, log)()
	log.Info().Str("sink", sink.Name()).Msg("ingest running")
	if *opt.batchRows <= 0 || *opt.batchRows > ingest.MaxBatchRows || *opt.batchMiB <= 0 || *opt.batchMiB<<20 > ingest.MaxBatchBytes {
		return fmt.Errorf("-batch-rows must be in 1..%d and -batch-mib in 1..%d", ingest.MaxBatchRows, ingest.MaxBatchBytes>>20)
	}
	return ingest.New(js, sink, ingest.Config{ConsumerPrefix: *opt.prefix, FlushInterval: *opt.flush,
		BatchRows: *opt.batchRows, BatchBytes: *opt.batchMiB << 20,
		Shared: *opt.shared, LeaseTTL: *opt.leaseTTL, Instance: *opt.instance, Replicas: *opt.replicas}, m, log).Run(ctx)
}
