package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/store"
	"github.com/rs/zerolog"
)

func init() {
	register(&command{
		name:    "analyze",
		summary: "Compute per-cycle energy, J/token, latency percentiles and multi-cycle statistics of runs.",
		usage:   "[run id...]",
		setup:   newAnalyzeCmd,
	})
}

// analyzeCmd holds the flags of `lem analyze`.
type analyzeCmd struct {
	method    *string
	write     *bool
	stc       func() store.Config
	logger    func() zerolog.Logger
	footprint func() analytics.Footprint
}

// newAnalyzeCmd registers the flags of `lem analyze` on fs.
func newAnalyzeCmd(fs *flag.FlagSet) func([]string) error {
	opt := &analyzeCmd{
		method:    fs.String("attribution", analytics.AttributionMethod, "per-request attribution of dynamic energy: power-model (fitted per cycle; token weights where not determined), token-weighted or equal-share"),
		write:     fs.Bool("write", false, "also write the results (run_results, cycle_results, request_energy) back to the store"),
		stc:       storeFlags(fs, "", "read the local Parquet store under this directory"),
		logger:    logFlags(fs),
		footprint: footprintFlags(fs),
	}
	return opt.run
}

func (opt *analyzeCmd) run(args []string) error {
	boundHeap()
	ctx := context.Background()
	store, ids, err := openRuns(ctx, opt.stc(), *opt.write, opt.logger(), args)
	if err != nil {
		return err
	}
	defer store.Close()
	var results []*analytics.RunResult
	var names []string
	for _, id := range ids {
		r, err := analytics.AnalyzeRunWith(ctx, store, id, analytics.Options{Method: *opt.method})
		if err != nil {
			return err
		}
		analytics.PrintRunWith(os.Stdout, r, opt.footprint())
		fmt.Println()
		if *opt.write {
			if err := writeResults(ctx, store, r); err != nil {
				return err
			}
		}
		name := analytics.ConfigValue(r.Config, "run")
		if name == "" {
			name = r.RunID
		}
		results, names = append(results, r), append(names, name)
	}
	// Several runs (a sweep's configurations): the table `lem run` closes
	// with.
	if len(results) > 1 {
		printSweep(os.Stdout, names, results)
	}
	return nil
}
