package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/pqstore"
)

func init() {
	register(&command{
		name:    "analyze",
		summary: "Compute per-cycle energy, J/token, latency percentiles and multi-cycle statistics of runs.",
		usage:   "[run id...]",
		setup: func(fs *flag.FlagSet) func([]string) error {
			pqDir := fs.String("parquet", "", "read the local Parquet store under this directory")
			method := fs.String("attribution", analytics.MethodTokens, "per-request attribution of dynamic energy: token-weighted or equal-share")
			write := fs.Bool("write", false, "also write the results (run_results, cycle_results, request_energy) back to the store")
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
				ids, err := runIDsOrAll(ctx, store, args)
				if err != nil {
					return err
				}
				for _, id := range ids {
					r, err := analytics.AnalyzeRunWith(ctx, store, id, analytics.Options{Method: *method})
					if err != nil {
						return err
					}
					analytics.PrintRun(os.Stdout, r)
					if *write {
						if err := writeResults(ctx, cfg, *pqDir, r); err != nil {
							return err
						}
					}
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

// runIDsOrAll returns ids, or every run in the store when none is given.
func runIDsOrAll(ctx context.Context, store readStore, ids []string) ([]string, error) {
	if len(ids) > 0 {
		return ids, nil
	}
	return store.RunIDs(ctx)
}

// writeResults stores r's result tables beside its events: ClickHouse
// (migrated first: the result tables are migration 0005) or the Parquet
// store (one file per run and table, replaced on re-analysis).
func writeResults(ctx context.Context, cfg ingest.ClickHouseConfig, pqDir string, r *analytics.RunResult) error {
	tables := analytics.ResultTables(r, time.Now().UnixNano())
	if cfg.Addr != "" {
		conn, err := ingest.OpenClickHouse(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := ingest.Migrate(ctx, conn, cfg.Database, zerolog.Nop()); err != nil {
			return err
		}
		sink, err := ingest.NewClickHouseSink(conn, cfg.Database)
		if err != nil {
			return err
		}
		for _, t := range tables {
			if t.Rows() == 0 {
				continue
			}
			if err := sink.Write(ctx, t); err != nil {
				return fmt.Errorf("writing %s: %w", t.Name, err)
			}
		}
		return nil
	}
	for _, t := range tables {
		path := filepath.Join(pqDir, t.Name, analytics.ResultFileName(r.RunID))
		if t.Rows() == 0 {
			os.Remove(path)
			continue
		}
		if err := pqstore.WriteFile(path, t, map[string]string{"lem.tool_version": version, "lem.run_ids": r.RunID}); err != nil {
			return err
		}
	}
	return nil
}
