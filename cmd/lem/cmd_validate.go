package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/store"
	"github.com/rs/zerolog"
)

func init() {
	register(&command{
		name: "validate-power",
		summary: "Compare, per phase and device, the energy counter with the integrals of every power series " +
			"(driver buffer, instant field) and count captured samples and gaps.",
		setup: newValidatePowerCmd,
	})
}

func readPhases(path string) ([]analytics.Phase, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading phases: %w", err)
	}
	var out []analytics.Phase
	for i, rec := range recs {
		if len(rec) < 3 {
			return nil, fmt.Errorf("phases line %d: want name,start_ns,end_ns", i+1)
		}
		a, err1 := strconv.ParseInt(rec[1], 10, 64)
		b, err2 := strconv.ParseInt(rec[2], 10, 64)
		if err1 != nil || err2 != nil {
			if i == 0 {
				continue // header
			}
			return nil, fmt.Errorf("phases line %d: times must be integers (ns)", i+1)
		}
		if b > a {
			out = append(out, analytics.Phase{Name: rec[0], From: a, To: b})
		}
	}
	return out, nil
}

// printDelayFits reports, per device, how the counter's timing matches the
// power series (analytics.FitCounterDelay) over the span of the phases.
func printDelayFits(ctx context.Context, st analytics.Store, ref analytics.Store, phases []analytics.Phase, devs []string) error {
	if ref == nil {
		ref = st
	}
	from, to := phases[0].From, phases[0].To
	for _, p := range phases {
		from, to = min(from, p.From), max(to, p.To)
	}
	fmt.Println()
	fmt.Println("Counter timing against the power series (interval energies, best extra shift; docs/methodology.md):")
	fmt.Println()
	fmt.Println("| device | counter source | series | intervals | best extra delay ms | RMS J at best | RMS J at 0 | gain |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, d := range devs {
		rs, err := ref.Energy(ctx, d, from-5e9, to+5e9)
		if err != nil {
			return err
		}
		ps, src, err := analytics.Power(ctx, st, d, from-5e9, to+5e9)
		if err != nil {
			return err
		}
		if len(rs) == 0 || len(ps) == 0 {
			continue
		}
		f := analytics.FitCounterDelay(rs, ps, 60e6)
		fmt.Printf("| %s | %s | %s | %d | %+.0f | %.2f | %.2f | %.4f |\n", d, rs[0].Source, src, f.Intervals,
			float64(f.Delay)/1e6, f.RMSJ, f.RMSZeroJ, f.Scale)
	}
	return nil
}

// validatePowerCmd holds the flags of `lem validate-power`.
type validatePowerCmd struct {
	refDir     *string
	phasesFile *string
	stc        func() store.Config
}

// newValidatePowerCmd registers the flags of `lem validate-power` on fs.
func newValidatePowerCmd(fs *flag.FlagSet) func([]string) error {
	opt := &validatePowerCmd{
		refDir:     fs.String("reference", "", "Parquet store whose energy counter is the reference (a second agent reading it at full resolution); default: the same store"),
		phasesFile: fs.String("phases", "", "CSV of phases: name,start_unix_ns,end_unix_ns[,details]"),
		stc:        storeFlags(fs, "", "read the local Parquet store under this directory"),
	}
	return opt.run
}

func (opt *validatePowerCmd) run(_ []string) error {
	if *opt.phasesFile == "" {
		return errors.New("-phases is required")
	}
	phases, err := readPhases(*opt.phasesFile)
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openStore(ctx, opt.stc(), false, zerolog.Nop())
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	var ref analytics.Store
	if *opt.refDir != "" {
		ref = store.Parquet(*opt.refDir)
	}
	cs, err := analytics.ComparePhases(ctx, st, ref, phases)
	if err != nil {
		return err
	}
	analytics.PrintPhaseChecks(os.Stdout, cs)
	var devs []string
	for _, c := range cs {
		if len(devs) == 0 || devs[len(devs)-1] != c.Device {
			devs = append(devs, c.Device)
		}
	}
	return printDelayFits(ctx, st, ref, phases, devs)

}
