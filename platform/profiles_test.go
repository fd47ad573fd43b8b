package platform

import (
	"fmt"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/analytics"
)

// NVML product names as drivers report them, with the enforced limits of
// their form factors.
func TestMatchProfile(t *testing.T) {
	for _, c := range []struct {
		name   string
		limitW float64
		want   string
	}{
		{"NVIDIA H200", 700, "h200-sxm"},
		{"NVIDIA H200 NVL", 600, "h200-nvl"},
		{"NVIDIA H100 80GB HBM3", 700, "h100-sxm"},
		{"NVIDIA H100 PCIe", 350, "h100-pcie"},
		{"NVIDIA H100 NVL", 400, "h100-nvl"},
		{"NVIDIA A100-SXM4-80GB", 400, "a100-sxm-80"},
		{"NVIDIA A100-SXM4-40GB", 400, "a100-sxm-40"},
		{"NVIDIA A100 80GB PCIe", 300, "a100-pcie-80"},
		{"NVIDIA A100-PCIE-40GB", 250, "a100-pcie-40"},
		{"NVIDIA L40S", 350, "l40s"},
		{"NVIDIA L40", 300, "l40"},
		{"NVIDIA L4", 72, "l4"},
		{"NVIDIA A10", 150, "a10"},
		{"NVIDIA GeForce RTX 4090", 450, "rtx-4090"},
		{"NVIDIA H200", 500, "h200-sxm"}, // a limit set lower is still the board
		{"NVIDIA B200", 1000, ""},        // unknown: not guessed
		{"NVIDIA H100 PCIe", 700, ""},    // a limit no PCIe H100 allows: not this profile
		{"Simulated H200 (not a measurement)", 700, "h200-sxm"},
	} {
		p, ok := MatchProfile(c.name, c.limitW)
		if c.want == "" {
			if ok {
				t.Errorf("%s at %.0f W matched %s; want none", c.name, c.limitW, p.ID)
			}
			continue
		}
		if !ok || p.ID != c.want {
			t.Errorf("%s at %.0f W: %q (%v), want %s", c.name, c.limitW, p.ID, ok, c.want)
		}
	}
}

func TestBaselineAgainstProfile(t *testing.T) {
	h200, _ := MatchProfile("NVIDIA H200", 700)
	info := map[string]deviceInfo{"g0": {Name: "NVIDIA H200", LimitW: 700, Profile: h200, Known: true}, "g1": {Name: "NVIDIA B200"}}
	for _, c := range []struct {
		w      map[string]float64
		status string
		detail string
	}{
		{map[string]float64{"g0": 119}, "pass", "119.0 W in 14–280 W (h200-sxm)"},
		{map[string]float64{"g0": 450}, "warn", "outside the profile's plausible idle band 14–280 W"},
		{map[string]float64{"g0": 119, "g1": 300}, "pass", "no standard profile for NVIDIA B200"},
		{map[string]float64{}, "warn", "no idle baseline"},
	} {
		r := &analytics.RunResult{Devices: []string{"g0", "g1"}, BaselineW: c.w}
		var got Check
		checkBaseline(r, info, func(name, status, format string, a ...any) { got = Check{name, status, fmt.Sprintf(format, a...)} })
		if got.Status != c.status || !strings.Contains(got.Detail, c.detail) {
			t.Errorf("baseline %v: %s %q, want %s containing %q", c.w, got.Status, got.Detail, c.status, c.detail)
		}
	}
}
