package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/exporters"
	lemarrow "github.com/llm-energy-measure/lem/exporters/arrow"
	lemcsv "github.com/llm-energy-measure/lem/exporters/csv"
	"github.com/llm-energy-measure/lem/exporters/hfdataset"
	lemparquet "github.com/llm-energy-measure/lem/exporters/parquet"
	"github.com/llm-energy-measure/lem/internal/progress"
	"github.com/llm-energy-measure/lem/store"
	"github.com/rs/zerolog"
)

func init() {
	register(&command{
		name: "export",
		summary: "Export runs (or a time range) from ClickHouse or the Parquet store as Parquet shards, Arrow IPC files, " +
			"CSV, or a Hugging Face dataset with its card.",
		setup: newExportCmd,
	})
}

// parseInstant reads RFC 3339 or integer ns since the epoch ("" is 0).
func parseInstant(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither RFC 3339 nor ns since the epoch", s)
	}
	return t.UnixNano(), nil
}

// exportCmd holds the flags of `lem export`.
type exportCmd struct {
	runs     *string
	from     *string
	to       *string
	format   *string
	out      *string
	tables   *string
	rowGroup *int64
	shardMB  *int64
	stc      func() store.Config
	logger   func() zerolog.Logger
}

// newExportCmd registers the flags of `lem export` on fs.
func newExportCmd(fs *flag.FlagSet) func([]string) error {
	opt := &exportCmd{
		runs:     fs.String("run", "", "comma-separated run ids (all tables of those runs, device tables over their span)"),
		from:     fs.String("from", "", "start of a time range (RFC 3339 or ns since the epoch) instead of -run"),
		to:       fs.String("to", "", "end of the time range"),
		format:   fs.String("format", "parquet", "parquet, arrow, csv or hf"),
		out:      fs.String("out", "", "output directory (required)"),
		tables:   fs.String("tables", "", "comma-separated tables (default: all)"),
		rowGroup: fs.Int64("row-group-rows", lemparquet.DefaultRowGroupRows, "parquet/hf: rows per row group"),
		shardMB:  fs.Int64("shard-mb", lemparquet.DefaultShardBytes>>20, "parquet/hf: approximate size of a shard before compression (MiB)"),
		stc:      storeFlags(fs, "", "read the local Parquet store under this directory"),
		logger:   logFlags(fs),
	}
	return opt.run
}

func (opt *exportCmd) run(args []string) error {
	if *opt.out == "" {
		return errors.New("-out is required")
	}
	boundHeap()
	log := opt.logger()
	sel := exporters.Selection{}
	var err error
	if *opt.runs != "" {
		sel.RunIDs = strings.Split(*opt.runs, ",")
	}
	if sel.From, err = parseInstant(*opt.from); err != nil {
		return fmt.Errorf("-from: %w", err)
	}
	if sel.To, err = parseInstant(*opt.to); err != nil {
		return fmt.Errorf("-to: %w", err)
	}
	if len(sel.RunIDs) == 0 && (sel.From == 0 || sel.To == 0) {
		return errors.New("give -run, or -from and -to")
	}
	if *opt.tables != "" {
		sel.Tables = strings.Split(*opt.tables, ",")
	}
	ctx := context.Background()
	store, err := openStore(ctx, opt.stc(), false, log)
	if err != nil {
		return err
	}
	defer store.Close()
	n := len(sel.Tables)
	if n == 0 {
		n = len(exporters.Tables)
	}
	bar := progress.New(os.Stderr, "export "+*opt.format, int64(n), log.GetLevel() > 1)
	done := 0
	prog := func(table string, rows int) {
		done++
		bar.Set(int64(done), fmt.Sprintf("%s: %d rows", table, rows))
	}
	defer bar.Done()
	var files []string
	var sum exporters.Summary
	switch *opt.format {
	case "parquet":
		w := &lemparquet.Writer{Dir: *opt.out, RowGroupRows: *opt.rowGroup, ShardBytes: *opt.shardMB << 20}
		sum, err = exporters.Export(ctx, store, store, sel, version, w, prog)
		files = w.Files
	case "arrow":
		w := &lemarrow.Writer{Dir: *opt.out}
		sum, err = exporters.Export(ctx, store, store, sel, version, w, prog)
		files = w.Files
	case "csv":
		w := &lemcsv.Writer{Dir: *opt.out}
		sum, err = exporters.Export(ctx, store, store, sel, version, w, prog)
		files = w.Files
	case "hf":
		if len(sel.RunIDs) == 0 {
			return errors.New("-format hf exports runs: give -run")
		}
		var results []*analytics.RunResult
		for _, id := range sel.RunIDs {
			r, err := analytics.AnalyzeRun(ctx, store, id)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
		var hs hfdataset.Summary
		hs, err = hfdataset.Export(ctx, store, store, sel.RunIDs, results, *opt.out, version,
			hfdataset.Options{RowGroupRows: *opt.rowGroup, ShardBytes: *opt.shardMB << 20, Progress: prog})
		sum.Rows, files = hs.Rows, hs.Files
	default:
		return fmt.Errorf("-format: unknown %q (parquet, arrow, csv or hf)", *opt.format)
	}
	if err != nil {
		return err
	}
	bar.Done()
	var parts []string
	for _, t := range exporters.Tables {
		if sum.Rows[t] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", t, sum.Rows[t]))
		}
	}
	fmt.Printf("exported %d files to %s (%s rows)\n", len(files), *opt.out, strings.Join(parts, ", "))
	return nil

}
