package nvml

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ProbeResult is what a driver delivers on one GPU, measured: per-call
// cost of each reading lem uses, the counter's refresh period and the
// power buffer's sample spacing.
type ProbeResult struct {
	GPU            string
	CallCost       map[string][3]time.Duration // p50, p90, max
	CounterRefresh time.Duration               // median time between counter changes
	BufferSpacing  [3]time.Duration            // p10, p50, p90 between driver samples
	BufferDepth    int                         // samples returned by a first read
}

// Probe measures g for about d.
func (rd *Reader) Probe(g *GPU, d time.Duration) ProbeResult {
	res := ProbeResult{GPU: g.ID.UUID, CallCost: map[string][3]time.Duration{}}
	timeIt := func(name string, n int, f func()) {
		ds := make([]time.Duration, n)
		for i := range ds {
			t := time.Now()
			f()
			ds[i] = time.Since(t)
		}
		sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
		res.CallCost[name] = [3]time.Duration{ds[n/2], ds[n*9/10], ds[n-1]}
	}
	dev := g.dev
	if g.HasCounter {
		timeIt("GetTotalEnergyConsumption", 50, func() { dev.GetTotalEnergyConsumption() })
		// Counter refresh: poll tightly, note changes.
		var changes []time.Time
		last, _ := dev.GetTotalEnergyConsumption()
		for end := time.Now().Add(d / 2); time.Now().Before(end); {
			v, _ := dev.GetTotalEnergyConsumption()
			if v != last {
				changes = append(changes, time.Now())
				last = v
			}
		}
		var gaps []time.Duration
		for i := 1; i < len(changes); i++ {
			gaps = append(gaps, changes[i].Sub(changes[i-1]))
		}
		if len(gaps) > 0 {
			sort.Slice(gaps, func(a, b int) bool { return gaps[a] < gaps[b] })
			res.CounterRefresh = gaps[len(gaps)/2]
		}
	}
	if g.HasBuffer {
		timeIt("GetSamples(TOTAL_POWER_SAMPLES)", 20, func() { dev.GetSamples(nvml.TOTAL_POWER_SAMPLES, 0) })
		_, ss, r := dev.GetSamples(nvml.TOTAL_POWER_SAMPLES, 0)
		if r == nvml.SUCCESS {
			res.BufferDepth = len(ss)
			sort.Slice(ss, func(a, b int) bool { return ss[a].TimeStamp < ss[b].TimeStamp })
			var sp []time.Duration
			for i := 1; i < len(ss); i++ {
				sp = append(sp, time.Duration(ss[i].TimeStamp-ss[i-1].TimeStamp)*time.Microsecond)
			}
			if len(sp) > 0 {
				sort.Slice(sp, func(a, b int) bool { return sp[a] < sp[b] })
				res.BufferSpacing = [3]time.Duration{sp[len(sp)/10], sp[len(sp)/2], sp[len(sp)*9/10]}
			}
		}
	}
	if g.HasInstant {
		timeIt("GetFieldValues(186)", 50, func() { dev.GetFieldValues([]nvml.FieldValue{{FieldId: FieldPowerInstant}}) })
	}
	timeIt("state (8 calls)", 50, func() {
		dev.GetClockInfo(nvml.CLOCK_SM)
		dev.GetClockInfo(nvml.CLOCK_MEM)
		dev.GetTemperature(nvml.TEMPERATURE_GPU)
		dev.GetUtilizationRates()
		dev.GetMemoryInfo()
		dev.GetCurrentClocksEventReasons()
		dev.GetEnforcedPowerLimit()
		dev.GetPerformanceState()
	})
	return res
}

// Print writes the result as markdown.
func (p ProbeResult) Print(w io.Writer) {
	fmt.Fprintf(w, "GPU %s\n\n| call | p50 | p90 | max |\n|---|---|---|---|\n", p.GPU)
	names := make([]string, 0, len(p.CallCost))
	for n := range p.CallCost {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := p.CallCost[n]
		fmt.Fprintf(w, "| %s | %v | %v | %v |\n", n, c[0], c[1], c[2])
	}
	fmt.Fprintf(w, "\ncounter refresh (median between changes): %v\n", p.CounterRefresh)
	fmt.Fprintf(w, "power buffer: %d samples deep; spacing p10/p50/p90 %v / %v / %v\n",
		p.BufferDepth, p.BufferSpacing[0], p.BufferSpacing[1], p.BufferSpacing[2])
}
