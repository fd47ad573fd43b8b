package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
)

func init() {
	register(&command{
		name: "serve",
		summary: "Run the embedded backbone as a daemon: a JetStream server listening for agents and runners, " +
			"with ingest in-process into -parquet or -clickhouse.",
		setup: func(fs *flag.FlagSet) func([]string) error {
			listen := fs.String("listen", "127.0.0.1:4222", "NATS client address to listen on")
			pqDir := fs.String("parquet", "lem-store", "Parquet store directory (unless -clickhouse); the JetStream store is <dir>.nats")
			withIngest := fs.Bool("ingest", true, "run ingest in-process (false: only the JetStream server, for a separate lem ingest)")
			chc := clickhouseFlags(fs)
			logger := logFlags(fs)
			return func([]string) error {
				log := logger()
				cfg, err := chc()
				if err != nil {
					return err
				}
				if !*withIngest {
					emb, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: *pqDir + ".nats", Listen: *listen})
					if err != nil {
						return err
					}
					fmt.Printf("serving NATS on %s (no ingest)\n", emb.ClientURL())
					ctx, cancel := signalContext()
					defer cancel()
					<-ctx.Done()
					emb.Shutdown()
					return nil
				}
				bb, err := startBackbone(*listen, *pqDir, cfg, log)
				if err != nil {
					return err
				}
				fmt.Printf("serving NATS on %s\n", bb.url)
				ctx, cancel := signalContext()
				defer cancel()
				<-ctx.Done()
				bb.stop()
				return nil
			}
		},
	})
}

// backbone is an embedded JetStream server with in-process ingest.
type backbone struct {
	nc   *nats.Conn
	url  string
	stop func() // drains ingest, then shuts everything down
}

func startBackbone(listen, pqDir string, cfg ingest.ClickHouseConfig, log zerolog.Logger) (*backbone, error) {
	emb, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: pqDir + ".nats", Listen: listen})
	if err != nil {
		return nil, err
	}
	nc, err := emb.Connect("lem-backbone")
	if err != nil {
		emb.Shutdown()
		return nil, err
	}
	fail := func(err error) (*backbone, error) {
		nc.Close()
		emb.Shutdown()
		return nil, err
	}
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		return fail(err)
	}
	js := pub.JetStream()
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamConfig{}); err != nil {
		return fail(err)
	}
	sink, err := openSink(context.Background(), cfg, pqDir, log)
	if err != nil {
		return fail(err)
	}
	ictx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.New(js, sink, ingest.Config{}, nil, log).Run(ictx) }()
	return &backbone{nc: nc, url: emb.ClientURL(), stop: func() {
		fctx, c := context.WithTimeout(context.Background(), time.Minute)
		defer c()
		_ = waitIngested(fctx, js)
		cancel()
		<-done
		sink.Close()
		nc.Close()
		emb.Shutdown()
	}}, nil
}
