package main

import (
	"flag"
	"os"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/llm-energy-measure/lem/collectors/nvml"
)

func init() {
	register(&command{
		name:    "probe",
		summary: "Measure what this host's NVML delivers: cost of each call lem makes, energy-counter refresh period, power-buffer depth and spacing.",
		setup:   newProbeCmd,
	})
}

// probeCmd holds the flags of `lem probe`.
type probeCmd struct {
	devs *string
	dur  *time.Duration
}

// newProbeCmd registers the flags of `lem probe` on fs.
func newProbeCmd(fs *flag.FlagSet) func([]string) error {
	opt := &probeCmd{
		devs: fs.String("devices", "", "comma-separated GPU indices (empty: all)"),
		dur:  fs.Duration("duration", 2*time.Second, "time spent polling the counter per GPU"),
	}
	return opt.run
}

func (opt *probeCmd) run(_ []string) error {
	idx, err := parseIndices(*opt.devs)
	if err != nil {
		return err
	}
	rd, err := nvml.Open(gonvml.New(), "", idx, nil)
	if err != nil {
		return err
	}
	defer rd.Close()
	for _, g := range rd.GPUs {
		rd.Probe(g, *opt.dur).Print(os.Stdout)
	}
	return nil

}
