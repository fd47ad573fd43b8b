package platform

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// Profile is a standard hardware profile: a GPU model and form factor
// with its board power limit and memory, matched from a run's NVML
// inventory (device name and enforced power limit). Power limits are the
// vendors' datasheet values (default TGP/TDP of the form factor); the idle
// band is a plausibility range, not a specification: 2–40% of the limit
// (the H200 here idles at 115–125 W of 700 W, docs/validation).
type Profile struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	MemoryGB float64 `json:"memory_gb"`
	LimitW   float64 `json:"limit_w"`
	// match is the NVML product name pattern; limits tell form factors of
	// one name apart (the enforced limit may be set lower, not higher).
	match *regexp.Regexp
}

// IdleRange is the band of idle power the baseline check accepts.
func (p Profile) IdleRange() (lo, hi float64) { return 0.02 * p.LimitW, 0.40 * p.LimitW }

func pr(id, name string, mem, limit float64, re string) Profile {
	return Profile{ID: id, Name: name, MemoryGB: mem, LimitW: limit, match: regexp.MustCompile(`(?i)` + re)}
}

// Profiles are the standard hardware profiles, most specific first.
var Profiles = []Profile{
	pr("h200-nvl", "NVIDIA H200 NVL 141 GB", 141, 600, `\bH200 NVL\b`),
	pr("h200-sxm", "NVIDIA H200 SXM 141 GB", 141, 700, `\bH200\b`),
	pr("h100-nvl", "NVIDIA H100 NVL 94 GB", 94, 400, `\bH100 NVL\b`),
	pr("h100-sxm", "NVIDIA H100 SXM 80 GB", 80, 700, `\bH100\b.*(SXM|HBM3)`),
	pr("h100-pcie", "NVIDIA H100 PCIe 80 GB", 80, 350, `\bH100\b.*PCIe`),
	pr("a100-sxm-80", "NVIDIA A100 SXM4 80 GB", 80, 400, `\bA100\b.*(SXM.*80|80.*SXM)`),
	pr("a100-sxm-40", "NVIDIA A100 SXM4 40 GB", 40, 400, `\bA100\b.*SXM`),
	pr("a100-pcie-80", "NVIDIA A100 PCIe 80 GB", 80, 300, `\bA100\b.*(PCIE.*80|80.*PCIE)`),
	pr("a100-pcie-40", "NVIDIA A100 PCIe 40 GB", 40, 250, `\bA100\b.*PCIE`),
	pr("l40s", "NVIDIA L40S 48 GB", 48, 350, `\bL40S\b`),
	pr("l40", "NVIDIA L40 48 GB", 48, 300, `\bL40\b`),
	pr("l4", "NVIDIA L4 24 GB", 24, 72, `\bL4\b`),
	pr("a10", "NVIDIA A10 24 GB", 24, 150, `\bA10\b`),
	pr("rtx-4090", "NVIDIA GeForce RTX 4090 24 GB", 24, 450, `RTX 4090`),
}

// accepted holds the profiles this platform's moderators accepted from
// proposals, with the datasheet figures given in the decision: they match
// their board's exact NVML name, after the standard ones.
var accepted struct {
	sync.RWMutex
	ps []Profile
}

// acceptedProfile is a proposal's accepted profile as a matchable one.
func acceptedProfile(prop ProfileProposal) Profile {
	p := *prop.Profile
	p.match = regexp.MustCompile(`(?i)^` + regexp.QuoteMeta(prop.Name) + `$`)
	return p
}

// LoadAcceptedProfiles makes the profiles accepted on the platform (its
// proposals bucket) matchable in this process: the platform at start, a
// worker before it detects its own.
func LoadAcceptedProfiles(ctx context.Context, st *State) error {
	props, err := list[ProfileProposal](ctx, st.proposals)
	if err != nil {
		return err
	}
	var ps []Profile
	for _, pr := range props {
		if pr.State == ProposalAccepted && pr.Profile != nil {
			ps = append(ps, acceptedProfile(pr))
		}
	}
	slices.SortFunc(ps, func(a, b Profile) int { return strings.Compare(a.ID, b.ID) })
	accepted.Lock()
	accepted.ps = ps
	accepted.Unlock()
	return nil
}

// AllProfiles are the standard profiles and then the accepted ones.
func AllProfiles() []Profile {
	accepted.RLock()
	defer accepted.RUnlock()
	return append(slices.Clone(Profiles), accepted.ps...)
}

// MatchProfile returns the profile of a device by its NVML product name
// and enforced power limit (W, 0 when unknown): the first profile whose
// pattern matches the name and whose limit is not below the enforced one.
// No match is "not known", never a guess.
func MatchProfile(name string, limitW float64) (Profile, bool) {
	for _, p := range AllProfiles() {
		if p.match.MatchString(name) && (limitW == 0 || limitW <= p.LimitW*1.001) {
			return p, true
		}
	}
	return Profile{}, false
}

// label is the leaderboard's hardware label of a device: its profile's
// name, or its own name saying that no standard profile matched.
func (d deviceInfo) label() string {
	switch {
	case strings.Contains(strings.ToLower(d.Name), "simulat"):
		return d.Name // never dressed as real hardware
	case d.Known:
		return d.Profile.Name
	}
	return fmt.Sprintf("%s (no standard profile)", d.Name)
}

// deviceInfo is what the inventory says of one of a run's devices.
type deviceInfo struct {
	Name    string
	LimitW  float64 // the highest enforced power limit in the run's state samples; 0 unknown
	Profile Profile
	Known   bool // Profile matched
}

// runDeviceInfo reads the names (devices table) and enforced power limits
// (device_state over the run) of r's devices and matches their profiles.
func runDeviceInfo(ctx context.Context, st *store.Store, r *analytics.RunResult) (map[string]deviceInfo, error) {
	dev := schemas.NewDeviceRows()
	if err := st.ReadTable(ctx, dev.Table(), schemas.Filter{}); err != nil {
		return nil, err
	}
	out := map[string]deviceInfo{}
	for _, d := range r.Devices {
		out[d] = deviceInfo{Name: d}
	}
	for i, u := range dev.UUID.V {
		if di, ok := out[u]; ok && dev.Name.V[i] != "" {
			di.Name = dev.Name.V[i]
			out[u] = di
		}
	}
	from, to := cycleSpan(r)
	spec, _ := schemas.Spec(schemas.TableState)
	for u, di := range out {
		if from != to {
			t := spec.NewTable()
			if err := st.ReadTable(ctx, t, schemas.Filter{From: from - bundleMargin, To: to + bundleMargin, DeviceUUID: u}); err != nil {
				return nil, err
			}
			if c, ok := t.Column("power_limit_mw").(*schemas.Col[int64]); ok {
				for _, v := range c.V {
					di.LimitW = max(di.LimitW, float64(v)/1e3)
				}
			}
		}
		di.Profile, di.Known = MatchProfile(di.Name, di.LimitW)
		out[u] = di
	}
	return out, nil
}
