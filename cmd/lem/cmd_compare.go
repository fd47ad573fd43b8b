package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/exporters/plots"
	"github.com/llm-energy-measure/lem/store"
	"github.com/rs/zerolog"
)

func init() {
	register(&command{
		name: "compare",
		summary: "Compare runs side by side (mean ± 95% CI over cycles) and draw the comparison figures as PNG and SVG; " +
			"-aggregate pools the cycles of runs of one backend and model (mixing backends is an error).",
		usage: "[run id...]",
		setup: newCompareCmd,
	})
}

// compareCmd holds the flags of `lem compare`.
type compareCmd struct {
	backends   *string
	experiment *string
	aggregate  *string
	plotDir    *string
	stc        func() store.Config
}

// newCompareCmd registers the flags of `lem compare` on fs.
func newCompareCmd(fs *flag.FlagSet) func([]string) error {
	opt := &compareCmd{
		backends:   fs.String("backends", "", "compare the runs of these backends (comma-separated), e.g. vllm,pytorch"),
		experiment: fs.String("experiment", "", "compare the runs of this experiment"),
		aggregate:  fs.String("aggregate", "", "pool cycles of the selected runs: 'all' (one backend and model only) or 'backend' (one pool per backend and model)"),
		plotDir:    fs.String("plots", "", "write the figures (PNG and SVG) into this directory"),
		stc:        storeFlags(fs, "", "read the local Parquet store under this directory"),
	}
	return opt.run
}

func (opt *compareCmd) run(args []string) error {
	ctx := context.Background()
	store, ids, err := openRuns(ctx, opt.stc(), false, zerolog.Nop(), args)
	if err != nil {
		return err
	}
	defer store.Close()
	want := map[string]bool{}
	for _, b := range strings.Split(*opt.backends, ",") {
		if b != "" {
			want[b] = true
		}
	}
	var results []*analytics.RunResult
	for _, id := range ids {
		r, err := analytics.AnalyzeRun(ctx, store, id)
		if errors.Is(err, analytics.ErrNoRun) && len(args) == 0 {
			continue // an incomplete run in the store
		}
		if err != nil {
			return err
		}
		if (len(want) > 0 && !want[r.Backend]) || (*opt.experiment != "" && r.Experiment != *opt.experiment) {
			continue
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		return errors.New("no run matches")
	}
	switch *opt.aggregate {
	case "":
	case "all":
		a, err := analytics.Aggregate("all", results)
		if err != nil {
			return err
		}
		results = []*analytics.RunResult{a}
	case "backend":
		groups := map[string][]*analytics.RunResult{}
		for _, r := range results {
			k := r.Backend + " " + r.Model
			groups[k] = append(groups[k], r)
		}
		keys := make([]string, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		results = results[:0]
		for _, k := range keys {
			a, err := analytics.Aggregate(k, groups[k])
			if err != nil {
				return err
			}
			results = append(results, a)
		}
	default:
		return fmt.Errorf("-aggregate: unknown %q (all or backend)", *opt.aggregate)
	}
	cs := make([]analytics.Comparison, len(results))
	for i, r := range results {
		cs[i] = analytics.NewComparison(r)
	}
	analytics.PrintComparison(os.Stdout, cs)
	if *opt.plotDir != "" {
		files, err := plots.Write(*opt.plotDir, cs)
		if err != nil {
			return err
		}
		fmt.Printf("figures: %d files in %s\n", len(files), *opt.plotDir)
	}
	return nil

}
