package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/ingest"
)

func init() {
	register(&command{
		name:    "analyze",
		summary: "Compute per-cycle energy, J/token, latency percentiles and multi-cycle statistics of runs.",
		usage:   "[run id...]",
		setup: func(fs *flag.FlagSet) func([]string) error {
			pqDir := fs.String("parquet", "", "read the local Parquet store under this directory")
			chc := clickhouseFlags(fs)
			return func(args []string) error {
				cfg, err := chc()
				if err != nil {
					return err
				}
				ctx := context.Background()
				store, closeFn, err := openStore(ctx, cfg, *pqDir)
				if err != nil {
					return err
				}
				defer closeFn()
				ids := args
				if len(ids) == 0 {
					if ids, err = store.RunIDs(ctx); err != nil {
						return err
					}
				}
				for _, id := range ids {
					r, err := analytics.AnalyzeRun(ctx, store, id)
					if err != nil {
						return err
					}
					analytics.PrintRun(os.Stdout, r)
				}
				return nil
			}
		},
	})
}

type readStore interface {
	analytics.Store
	analytics.TableReader
}

func openStore(ctx context.Context, cfg ingest.ClickHouseConfig, pqDir string) (readStore, func(), error) {
	switch {
	case cfg.Addr != "" && pqDir != "":
		return nil, nil, errors.New("give only one of -clickhouse and -parquet")
	case pqDir != "":
		return &analytics.ParquetStore{Dir: pqDir}, func() {}, nil
	case cfg.Addr != "":
		conn, err := ingest.OpenClickHouse(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return &analytics.ClickHouseStore{Conn: conn, DB: cfg.Database}, func() { conn.Close() }, nil
	}
	return nil, nil, errors.New("give -clickhouse or -parquet")
}
