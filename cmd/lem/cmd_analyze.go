package main

import (
	"context"
	"flag"
	"os"

	"github.com/llm-energy-measure/lem/analytics"
)

func init() {
	register(&command{
		name:    "analyze",
		summary: "Compute per-cycle energy, J/token, latency percentiles and multi-cycle statistics of runs.",
		usage:   "[run id...]",
		setup: func(fs *flag.FlagSet) func([]string) error {
			method := fs.String("attribution", analytics.MethodTokens, "per-request attribution of dynamic energy: token-weighted or equal-share")
			write := fs.Bool("write", false, "also write the results (run_results, cycle_results, request_energy) back to the store")
			stc := storeFlags(fs, "", "read the local Parquet store under this directory")
			logger := logFlags(fs)
			return func(args []string) error {
				ctx := context.Background()
				store, err := openStore(ctx, stc(), *write, logger())
				if err != nil {
					return err
				}
				defer store.Close()
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
						if err := writeResults(ctx, store, r); err != nil {
							return err
						}
					}
				}
				return nil
			}
		},
	})
}
