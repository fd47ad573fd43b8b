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
)

func init() {
	register(&command{
		name: "export",
		summary: "Export runs (or a time range) from ClickHouse or the Parquet store as Parquet shards, Arrow IPC files, " +
			"CSV, or a Hugging Face dataset with its card.",
		setup: func(fs *flag.FlagSet) func([]string) error {
			runs := fs.String("run", "", "comma-separated run ids (all tables of those runs, device tables over their span)")
			from := fs.String("from", "", "start of a time range (RFC 3339 or ns since the epoch) instead of -run")
			to := fs.String("to", "", "end of the time range")
			format := fs.String("format", "parquet", "parquet, arrow, csv or hf")
			out := fs.String("out", "", "output directory (required)")
			tables := fs.String("tables", "", "comma-separated tables (default: all)")
			rowGroup := fs.Int64("row-group-rows", lemparquet.DefaultRowGroupRows, "parquet/hf: rows per row group")
			shardMB := fs.Int64("shard-mb", lemparquet.DefaultShardBytes>>20, "parquet/hf: approximate size of a shard before compression (MiB)")
			stc := storeFlags(fs, "", "read the local Parquet store under this directory")
			logger := logFlags(fs)
			return func(args []string) error {
				if *out == "" {
					return errors.New("-out is required")
				}
				log := logger()
				sel := exporters.Selection{}
				var err error
				if *runs != "" {
					sel.RunIDs = strings.Split(*runs, ",")
				}
				if sel.From, err = parseInstant(*from); err != nil {
					return fmt.Errorf("-from: %w", err)
				}
				if sel.To, err = parseInstant(*to); err != nil {
					return fmt.Errorf("-to: %w", err)
				}
				if len(sel.RunIDs) == 0 && (sel.From == 0 || sel.To == 0) {
					return errors.New("give -run, or -from and -to")
				}
				if *tables != "" {
					sel.Tables = strings.Split(*tables, ",")
				}
				ctx := context.Background()
				store, err := openStore(ctx, stc(), false, log)
				if err != nil {
					return err
				}
				defer store.Close()
				n := len(sel.Tables)
				if n == 0 {
					n = len(exporters.Tables)
				}
				bar := progress.New(os.Stderr, "export "+*format, int64(n), log.GetLevel() > 1)
				done := 0
				prog := func(table string, rows int) {
					done++
					bar.Set(int64(done), fmt.Sprintf("%s: %d rows", table, rows))
				}
				defer bar.Done()
				var files []string
				var sum exporters.Summary
				switch *format {
				case "parquet":
					w := &lemparquet.Writer{Dir: *out, RowGroupRows: *rowGroup, ShardBytes: *shardMB << 20}
					sum, err = exporters.Export(ctx, store, store, sel, version, w, prog)
					files = w.Files
				case "arrow":
					w := &lemarrow.Writer{Dir: *out}
					sum, err = exporters.Export(ctx, store, store, sel, version, w, prog)
					files = w.Files
				case "csv":
					w := &lemcsv.Writer{Dir: *out}
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
					hs, err = hfdataset.Export(ctx, store, store, sel.RunIDs, results, *out, version,
						hfdataset.Options{RowGroupRows: *rowGroup, ShardBytes: *shardMB << 20, Progress: prog})
					sum.Rows, files = hs.Rows, hs.Files
				default:
					return fmt.Errorf("-format: unknown %q (parquet, arrow, csv or hf)", *format)
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
				fmt.Printf("exported %d files to %s (%s rows)\n", len(files), *out, strings.Join(parts, ", "))
				return nil
			}
		},
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
