package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

func init() {
	register(&command{
		name: "runs",
		summary: "List the runs in a store (id, start, experiment, backend, model, GPU, cycles, quality, J/token from the " +
			"written-back results), with filters; 'runs show ID' prints one run's events, configuration and results.",
		usage: "[show RUN_ID]",
		setup: newRunsCmd,
	})
}

// runsCmd holds the flags of `lem runs`.
type runsCmd struct {
	experiment, backend, model *string
	stc                        func() store.Config
	logger                     func() zerolog.Logger
}

// newRunsCmd registers the flags of `lem runs` on fs.
func newRunsCmd(fs *flag.FlagSet) func([]string) error {
	opt := &runsCmd{
		experiment: fs.String("experiment", "", "only runs of this experiment"),
		backend:    fs.String("backend", "", "only runs of this backend"),
		model:      fs.String("model", "", "only runs of this model"),
		stc:        storeFlags(fs, "", "read the local Parquet store under this directory"),
		logger:     logFlags(fs),
	}
	return opt.run
}

// runInfo is one line of `lem runs`.
type runInfo struct {
	ID, Experiment, Backend, Model, GPU string
	Start                               int64
	Cycles                              int
	Quality                             string
	JPerToken, CI95                     float64
	Events                              []schemas.RunEvent
}

func (opt *runsCmd) run(args []string) error {
	ctx := context.Background()
	st, err := openStore(ctx, opt.stc(), false, opt.logger())
	if err != nil {
		return err
	}
	defer st.Close()
	switch {
	case len(args) == 2 && args[0] == "show":
		return showRun(ctx, os.Stdout, st, args[1])
	case len(args) != 0:
		return errUsage
	}
	ids, err := st.RunIDs(ctx)
	if err != nil {
		return err
	}
	infos, err := listRuns(ctx, st, ids)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tstart (UTC)\texperiment\tbackend\tmodel\tGPU\tcycles\tquality\tJ/token (mean ± 95% CI)")
	shown, unanalysed := 0, 0
	for _, r := range infos {
		if (*opt.experiment != "" && r.Experiment != *opt.experiment) || (*opt.backend != "" && r.Backend != *opt.backend) ||
			(*opt.model != "" && r.Model != *opt.model) {
			continue
		}
		jpt, q := "—", r.Quality
		switch {
		case q == "":
			q, jpt = "not analysed", "—"
			unanalysed++
		case !math.IsNaN(r.CI95):
			jpt = analytics.MeanCI(r.JPerToken, r.CI95)
		case !math.IsNaN(r.JPerToken):
			jpt = analytics.FormatStat(analytics.Stat{N: r.Cycles, Mean: r.JPerToken, CI95: math.NaN()})
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, time.Unix(0, r.Start).UTC().Format("2006-01-02 15:04:05"),
			r.Experiment, r.Backend, r.Model, r.GPU, r.Cycles, q, jpt)
		shown++
	}
	tw.Flush()
	fmt.Printf("%d run(s)", shown)
	if unanalysed > 0 {
		fmt.Printf("; %d not analysed (results are written back by lem run, lem demo and lem analyze -write)", unanalysed)
	}
	fmt.Println()
	return nil
}

// listRuns reads the events, devices and written-back results of the runs
// ids; runs without events are left out.
func listRuns(ctx context.Context, st *store.Store, ids []string) ([]runInfo, error) {
	names := map[string]string{}
	dev := schemas.NewDeviceRows()
	if err := st.ReadTable(ctx, dev.Table(), schemas.Filter{}); err != nil {
		return nil, err
	}
	for i, u := range dev.UUID.V {
		names[u] = dev.Name.V[i]
	}
	res := schemas.NewRunResultRows()
	if len(ids) > 0 {
		if err := st.ReadTable(ctx, res.Table(), schemas.Filter{RunIDs: ids}); err != nil {
			return nil, err
		}
	}
	type summary struct {
		mean, ci float64
		quality  string
	}
	// Results written before run_results.quality carried the whole label
	// have simulated/apportioned only in their own columns.
	label := func(i int) string {
		q := res.Quality.V[i]
		if res.Simulated.V[i] == 1 && !strings.Contains(q, "simulated") {
			q += ",simulated"
		}
		if res.Apportioned.V[i] == 1 && !strings.Contains(q, "apportioned") {
			q += ",apportioned"
		}
		// and said "ok" beside their flags.
		return strings.TrimPrefix(q, "ok,")
	}
	results := map[string]summary{}
	for i, id := range res.RunID.V {
		if res.Metric.V[i] == "j_per_token" {
			results[id] = summary{res.Mean.V[i], res.CI95.V[i], label(i)}
		}
	}
	var out []runInfo
	for _, id := range ids {
		evs, err := st.RunEvents(ctx, id)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			continue
		}
		r := runInfo{ID: id, Experiment: evs[0].Experiment, Backend: evs[0].Backend, Model: evs[0].Model, Start: evs[0].TS,
			JPerToken: math.NaN(), CI95: math.NaN(), Events: evs}
		gpus := map[string]int{}
		for _, u := range evs[0].Devices {
			n := names[u]
			if n == "" {
				n = u
			}
			gpus[n]++
		}
		var parts []string
		for n, k := range gpus {
			parts = append(parts, fmt.Sprintf("%d× %s", k, n))
		}
		sort.Strings(parts)
		r.GPU = strings.Join(parts, ", ")
		if r.GPU == "" {
			r.GPU = "none"
		}
		for _, e := range evs {
			if e.Phase == schemas.RunEnd {
				r.Cycles++
			}
		}
		if s, ok := results[id]; ok {
			r.JPerToken, r.CI95, r.Quality = s.mean, s.ci, s.quality
		}
		out = append(out, r)
	}
	return out, nil
}

// showRun prints one run: its lifecycle, configuration, inventory and the
// written-back results.
func showRun(ctx context.Context, w io.Writer, st *store.Store, id string) error {
	infos, err := listRuns(ctx, st, []string{id})
	if err != nil {
		return err
	}
	for _, r := range infos {
		fmt.Fprintf(w, "run %s\nexperiment %s, backend %s, model %s, GPU %s, %d cycle(s)\n", r.ID, r.Experiment, r.Backend, r.Model, r.GPU, r.Cycles)
		fmt.Fprintln(w, "\nevents:")
		for _, e := range r.Events {
			fmt.Fprintf(w, "  %s  cycle %d  %s\n", time.Unix(0, e.TS).UTC().Format("2006-01-02 15:04:05.000"), e.Cycle, e.Phase)
		}
		for _, part := range []struct{ name, doc string }{{"configuration", r.Events[0].Config}, {"inventory", r.Events[0].Inventory}} {
			var b bytes.Buffer
			if json.Indent(&b, []byte(part.doc), "  ", "  ") != nil {
				b.Reset()
				b.WriteString(part.doc)
			}
			fmt.Fprintf(w, "\n%s:\n  %s\n", part.name, b.String())
		}
		if r.Quality == "" {
			fmt.Fprintf(w, "\nnot analysed: lem analyze -write %s\n", r.ID)
		} else {
			fmt.Fprintf(w, "\nJ/token %s, quality %s (lem analyze %s for every figure)\n",
				analytics.MeanCI(r.JPerToken, r.CI95), r.Quality, r.ID)
		}
		return nil
	}
	return errors.New("no run " + id + " in the store (lem runs lists them)")
}
