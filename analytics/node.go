package analytics

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/llm-energy-measure/lem/schemas"
)

// NodeEnergy is the host's CPU and memory energy beside the GPUs', from
// RAPL (Linux powercap), per cycle.
type NodeEnergy struct {
	Host string
	// Domains are the RAPL domains counted, by UUID: packages (which
	// contain their cores and uncore) and DRAM.
	Domains []string
	// Cycles holds, per cycle (in the run's cycle order), package and DRAM
	// energy (J, NaN where the counter does not cover the window) and the
	// interpolation uncertainty (J: half a read period of power at each
	// edge, in quadrature).
	Cycles []NodeCycle
}

// NodeCycle is one cycle's node energy.
type NodeCycle struct {
	PackageJ, DRAMJ, UncJ float64
	// JPerToken is package plus DRAM (the package alone on a host without
	// a DRAM domain) per output token of the cycle; NaN without tokens.
	JPerToken float64
	Quality   string
}

// raplKind classifies a RAPL domain by its name: package or dram; cores
// and uncore are inside their package and are not added again.
func raplKind(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "dram"):
		return "dram"
	case strings.Contains(n, "package"):
		return "package"
	}
	return "" // core, uncore (inside a package), psys (overlaps them)
}

// nodeEnergy finds the RAPL domains of host in the devices table and
// integrates their counters over each cycle; nil when the store has none
// (the run then says CPU/DRAM energy was not collected).
func nodeEnergy(ctx context.Context, st Store, tr TableReader, host string, cycles []CycleResult) (*NodeEnergy, error) {
	if host == "" || len(cycles) == 0 {
		return nil, nil
	}
	dev := schemas.NewDeviceRows()
	if err := tr.ReadTable(ctx, dev.Table(), schemas.Filter{}); err != nil {
		return nil, err
	}
	kinds := map[string]string{}
	for i, src := range dev.Source.V {
		if src == schemas.SourceRAPL && dev.Host.V[i] == host {
			if k := raplKind(dev.Name.V[i]); k != "" {
				kinds[dev.UUID.V[i]] = k
			}
		}
	}
	if len(kinds) == 0 {
		return nil, nil
	}
	n := &NodeEnergy{Host: host}
	for u := range kinds {
		n.Domains = append(n.Domains, u)
	}
	sort.Strings(n.Domains)
	from, to := cycles[0].From, cycles[0].To
	for _, c := range cycles {
		from, to = min(from, c.From), max(to, c.To)
	}
	readings := map[string][]Reading{}
	for _, u := range n.Domains {
		rs, err := st.Energy(ctx, u, from-12e9, to+12e9)
		if err != nil {
			return nil, err
		}
		readings[u] = rs
	}
	for _, c := range cycles {
		nc := NodeCycle{Quality: QualityOK}
		var unc2 float64
		var nDRAM, nPkg int
		for _, u := range n.Domains {
			rs := readings[u]
			w := WindowEnergy(rs, c.From, c.To)
			nc.Quality = worse(nc.Quality, w.Quality)
			if kinds[u] == "dram" {
				nc.DRAMJ += w.Joules
				nDRAM++
			} else {
				nc.PackageJ += w.Joules
				nPkg++
			}
			// RAPL is read once per publish period (1 s by default), far
			// coarser than its own resolution: between reads the counter
			// is interpolated, so each edge is uncertain by half a read
			// period of power.
			if p := readPeriod(rs); p > 0 && !math.IsNaN(w.Joules) {
				watts := w.Joules / (float64(c.To-c.From) / 1e9)
				e := watts * float64(p) / 2 / 1e9
				unc2 += 2 * e * e
			}
		}
		// A kind this host has no domain of is unknown ("DRAM -"), not 0 J.
		if nDRAM == 0 {
			nc.DRAMJ = math.NaN()
		}
		if nPkg == 0 {
			nc.PackageJ = math.NaN()
		}
		nc.UncJ = math.Sqrt(unc2)
		nc.JPerToken = math.NaN()
		if c.OutputTokens > 0 {
			nc.JPerToken = nc.PackageJ / float64(c.OutputTokens)
			if !math.IsNaN(nc.DRAMJ) {
				nc.JPerToken = (nc.PackageJ + nc.DRAMJ) / float64(c.OutputTokens)
			}
		}
		n.Cycles = append(n.Cycles, nc)
	}
	return n, nil
}

// readPeriod is the median spacing of counter readings (ns).
func readPeriod(rs []Reading) int64 {
	if len(rs) < 2 {
		return 0
	}
	gaps := make([]float64, 0, len(rs)-1)
	for i := 1; i < len(rs); i++ {
		gaps = append(gaps, float64(rs[i].TSBefore-rs[i-1].TSBefore))
	}
	return int64(median(gaps))
}

// cycle returns cycle i's node energy; all NaN (NULL in the results) for
// a run without RAPL.
func (n *NodeEnergy) cycle(i int) NodeCycle {
	if n == nil || i >= len(n.Cycles) {
		nan := math.NaN()
		return NodeCycle{PackageJ: nan, DRAMJ: nan, UncJ: nan, JPerToken: nan}
	}
	return n.Cycles[i]
}

func (n *NodeEnergy) print(w io.Writer, r *RunResult) {
	if n == nil {
		fmt.Fprintln(w, "CPU/DRAM energy: not collected (no RAPL domains of this host in the store; lem agent and lem run read them where /sys/class/powercap is readable)")
		return
	}
	fmt.Fprintf(w, "host %s, RAPL (%d domains; not in the GPU figures above):\n", n.Host, len(n.Domains))
	for i, c := range n.Cycles {
		cy := r.Cycles[i]
		fmt.Fprintf(w, "  cycle %d: CPU package %s J, DRAM %s J (±%s J), %s J/token CPU+DRAM, %s\n", cy.Cycle,
			num(c.PackageJ, 1), num(c.DRAMJ, 1), num(c.UncJ, 1), num(c.JPerToken, 4), c.Quality)
	}
}
