package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/llm-energy-measure/lem/ingest"
)

func init() {
	register(&command{
		name:    "migrate",
		summary: "Create the ClickHouse database and apply every schema migration the server supports.",
		setup: func(fs *flag.FlagSet) func([]string) error {
			chc := clickhouseFlags(fs)
			logger := logFlags(fs)
			return func([]string) error {
				cfg, err := chc()
				if err != nil {
					return err
				}
				if cfg.Addr == "" {
					return errors.New("-clickhouse is required")
				}
				log := logger()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				conn, err := ingest.OpenClickHouse(ctx, cfg)
				if err != nil {
					return err
				}
				defer conn.Close()
				res, err := ingest.Migrate(ctx, conn, cfg.Database, log)
				if err != nil {
					return err
				}
				fmt.Printf("server %s: %d migration(s) applied", res.Server, len(res.Applied))
				for _, m := range res.Waiting {
					fmt.Printf("; %04d_%s waits for server %s", m.ID, m.Name, m.MinServer)
				}
				fmt.Println()
				return nil
			}
		},
	})
}
