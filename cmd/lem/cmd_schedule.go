package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/llm-energy-measure/lem/internal/sleep"
	"github.com/llm-energy-measure/lem/store"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

func init() {
	register(&command{
		name: "schedule",
		summary: "Run an experiment file repeatedly as a daemon: every interval (-every) or at times of day (-at), " +
			"each execution a new set of runs; failures are logged and the schedule goes on.",
		usage: "EXPERIMENT.yaml",
		setup: newScheduleCmd,
	})
}

// schedule runs job at each slot until ctx ends or count executions.
func schedule(ctx context.Context, every time.Duration, ats []time.Duration, count int, log zerolog.Logger, job func(context.Context) error) error {
	next := time.Now()
	if every == 0 {
		next = nextAt(time.Now(), ats)
	}
	for n := 0; count == 0 || n < count; n++ {
		log.Info().Time("at", next).Int("execution", n+1).Msg("next run")
		if !sleep.Ctx(ctx, time.Until(next)) {
			return nil
		}
		start := time.Now()
		if err := job(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error().Err(err).Msg("scheduled run failed; the schedule goes on")
		}
		if every > 0 {
			// Keep the grid: a run longer than the interval skips slots
			// instead of piling up.
			next = start.Add(every)
			for !next.After(time.Now()) {
				next = next.Add(every)
			}
		} else {
			next = nextAt(time.Now(), ats)
		}
	}
	return nil
}

// parseTimesOfDay parses "02:00,14:30" into offsets from midnight.
func parseTimesOfDay(s string) ([]time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		t, err := time.Parse("15:04", strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-at: %q is not HH:MM", f)
		}
		out = append(out, time.Duration(t.Hour())*time.Hour+time.Duration(t.Minute())*time.Minute)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// nextAt returns the first time of day in ats strictly after now (local).
func nextAt(now time.Time, ats []time.Duration) time.Time {
	y, m, d := now.Date()
	for day := 0; day < 2; day++ {
		midnight := time.Date(y, m, d+day, 0, 0, 0, 0, now.Location())
		for _, a := range ats {
			if t := midnight.Add(a); t.After(now) {
				return t
			}
		}
	}
	return now.Add(24 * time.Hour)
}

// scheduleCmd holds the flags of `lem schedule`.
type scheduleCmd struct {
	every    *time.Duration
	at       *string
	count    *int
	stc      func() store.Config
	natsOpts func() ([]nats.Option, error)
	logger   func() zerolog.Logger
	sets     func() []string
}

// newScheduleCmd registers the flags of `lem schedule` on fs.
func newScheduleCmd(fs *flag.FlagSet) func([]string) error {
	opt := &scheduleCmd{
		every:    fs.Duration("every", 0, "run every interval, e.g. 6h (the first run starts now)"),
		at:       fs.String("at", "", "run at these local times of day, e.g. 02:00,14:30"),
		count:    fs.Int("count", 0, "stop after this many executions (0: run until SIGINT/SIGTERM)"),
		stc:      storeFlags(fs, "", ""),
		natsOpts: natsFlags(fs),
		logger:   logFlags(fs),
		sets:     setFlags(fs),
	}
	return opt.run
}

func (opt *scheduleCmd) run(args []string) error {
	if len(args) != 1 {
		return errUsage
	}
	if (*opt.every > 0) == (*opt.at != "") {
		return errors.New("give exactly one of -every and -at")
	}
	ats, err := parseTimesOfDay(*opt.at)
	if err != nil {
		return err
	}
	// Validate once up front: a broken file should not wait for
	// its first slot to fail.
	if _, _, err := loadExperiment(args[0], opt.sets()...); err != nil {
		return err
	}
	ch := opt.stc().ClickHouse
	nopts, err := opt.natsOpts()
	if err != nil {
		return err
	}
	log := opt.logger()
	ctx, cancel := signalContext()
	defer cancel()
	return schedule(ctx, *opt.every, ats, *opt.count, log, func(ctx context.Context) error {
		// Re-read the file each time: edits apply to the next run.
		cfg, notes, err := loadExperiment(args[0], opt.sets()...)
		if err != nil {
			return err
		}
		e := &experimentRun{cfg: cfg, notes: notes, ch: ch, natsOpts: nopts, log: log, quiet: true, out: os.Stdout}
		_, err = e.execute(ctx)
		return err
	})

}
