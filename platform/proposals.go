package platform

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// An unknown board is proposed, never guessed: a published run whose
// device matches no standard profile (NVML name and enforced power limit)
// is labelled "no standard profile" on the board, and the board is put
// before the moderators as a proposed profile with the runs that used it.
// A moderator accepts it (for inclusion in lem's standard profiles, whose
// figures are vendors' datasheet values) or dismisses it, with a reason;
// both are platform events.

// BucketProposals holds the proposed hardware profiles.
const BucketProposals = "lem_platform_profile_proposals"

// Proposal states.
const (
	ProposalOpen      = "proposed"
	ProposalAccepted  = "accepted"
	ProposalDismissed = "dismissed"
)

// ProfileProposal is a board seen in published runs that no standard
// profile matches.
type ProfileProposal struct {
	Key       string   `json:"key"`
	Name      string   `json:"name"`    // as NVML reports it
	LimitW    float64  `json:"limit_w"` // the highest enforced power limit seen (0: unknown)
	Runs      []string `json:"runs"`    // runs that used it (at most 20)
	FirstNS   int64    `json:"first_ns"`
	LastNS    int64    `json:"last_ns"`
	State     string   `json:"state"`
	Reason    string   `json:"reason,omitempty"`
	Moderator string   `json:"moderator,omitempty"`
	// Profile is the accepted profile (the moderator's datasheet figures);
	// runs on this board are labelled with it from then on.
	Profile *Profile `json:"profile,omitempty"`
}

func proposalKey(name string, limitW float64) string {
	return kvKey(strings.ToLower(strings.Join(strings.Fields(name), "-")) + fmt.Sprintf("-%.0fw", limitW))
}

// ProposeProfile records that runID used an unknown board.
func (s *State) ProposeProfile(ctx context.Context, name string, limitW float64, runID string) error {
	key := proposalKey(name, limitW)
	p, ok, err := get[ProfileProposal](ctx, s.proposals, key)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	if !ok {
		p = ProfileProposal{Key: key, Name: name, LimitW: limitW, FirstNS: now, State: ProposalOpen}
	}
	if slices.Contains(p.Runs, runID) {
		return nil
	}
	if len(p.Runs) < 20 {
		p.Runs = append(p.Runs, runID)
	}
	p.LastNS = now
	if !ok {
		if err := s.record(ctx, "profile.proposed", key, "", p); err != nil {
			return err
		}
	}
	return put(ctx, s.proposals, key, p)
}

// proposeUnknown proposes the boards of a run's devices that match no
// standard profile (the simulator and devices without a name are not
// boards).
func (s *Server) proposeUnknown(ctx context.Context, runID string, info map[string]deviceInfo) {
	for uuid, d := range info {
		if d.Known || d.Name == "" || d.Name == uuid || strings.Contains(strings.ToLower(d.Name), "simulat") {
			continue
		}
		if err := s.cfg.State.ProposeProfile(ctx, d.Name, d.LimitW, runID); err != nil {
			s.cfg.Log.Warn().Err(err).Str("board", d.Name).Msg("unknown board not proposed")
		}
	}
}

func (s *Server) handleProposals(w http.ResponseWriter, r *http.Request, _ *principal) {
	ps, err := list[ProfileProposal](r.Context(), s.cfg.State.proposals)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if ps == nil {
		ps = []ProfileProposal{}
	}
	slices.SortFunc(ps, func(a, b ProfileProposal) int { return cmp.Compare(b.LastNS, a.LastNS) })
	writeJSON(w, http.StatusOK, ps)
}

// handleDecideProposal accepts (for inclusion in the standard profiles)
// or dismisses a proposed profile, with a reason.
func (s *Server) handleDecideProposal(w http.ResponseWriter, r *http.Request, p *principal) {
	req, ok := readDecision(w, r)
	if !ok {
		return
	}
	if req.Decision != ProposalAccepted && req.Decision != ProposalDismissed {
		writeErr(w, http.StatusBadRequest, "decision %q: want accepted or dismissed", req.Decision)
		return
	}
	if req.Reason == "" || len(req.Reason) > 2000 {
		writeErr(w, http.StatusBadRequest, "a decision on a proposed profile needs a reason (at most 2000 bytes): the datasheet it was checked against, or why not")
		return
	}
	ctx := r.Context()
	key := r.PathValue("key")
	s.mu.Lock()
	defer s.mu.Unlock()
	prop, ok, err := get[ProfileProposal](ctx, s.cfg.State.proposals, key)
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	case !ok:
		writeErr(w, http.StatusNotFound, "no proposed profile %q", key)
		return
	}
	if prop.State != ProposalOpen {
		writeErr(w, http.StatusConflict, "proposed profile %s was %s already", key, prop.State)
		return
	}
	if req.Decision == ProposalAccepted {
		if msg := checkAccepted(req.Profile, prop); msg != "" {
			writeErr(w, http.StatusBadRequest, "accepting %s: %s", prop.Name, msg)
			return
		}
		prop.Profile = &Profile{ID: req.Profile.ID, Name: strings.TrimSpace(req.Profile.Name), MemoryGB: req.Profile.MemoryGB, LimitW: req.Profile.LimitW}
	}
	prop.State, prop.Reason, prop.Moderator = req.Decision, req.Reason, p.User.ID
	if err := s.cfg.State.record(ctx, "profile."+req.Decision, key, p.User.ID, prop); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if err := put(ctx, s.cfg.State.proposals, key, prop); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if prop.Profile != nil {
		if err := LoadAcceptedProfiles(ctx, s.cfg.State); err != nil {
			s.cfg.Log.Warn().Err(err).Msg("accepted profiles not reloaded")
		}
		s.relabel(ctx, prop)
	}
	writeJSON(w, http.StatusOK, prop)
}

// checkAccepted says what is wrong with an accepted profile's figures
// ("" when nothing).
func checkAccepted(p *Profile, prop ProfileProposal) string {
	switch {
	case p == nil:
		return "give the profile's datasheet figures: profile {id, name, memory_gb, limit_w}"
	case !profileID.MatchString(p.ID):
		return fmt.Sprintf("profile id %q: lower-case letters, digits and dashes (e.g. b200-sxm)", p.ID)
	case strings.TrimSpace(p.Name) == "" || len(p.Name) > 100:
		return "profile name: the model, form factor and memory as people know it (e.g. NVIDIA B200 SXM 180 GB)"
	case !(p.MemoryGB > 0 && p.MemoryGB < 10000):
		return fmt.Sprintf("memory_gb %v: the board's memory in GB from its datasheet", p.MemoryGB)
	case !(p.LimitW > 0 && p.LimitW < 10000):
		return fmt.Sprintf("limit_w %v: the board's default power limit in W from its datasheet", p.LimitW)
	case prop.LimitW > p.LimitW*1.001:
		return fmt.Sprintf("limit_w %v W is below the %v W enforced in its runs: a board's limit can be lowered, not raised", p.LimitW, prop.LimitW)
	}
	if _, ok := profileByID(p.ID); ok {
		return fmt.Sprintf("profile id %q is taken", p.ID)
	}
	return ""
}

// relabel gives the runs on a newly accepted board its profile's name
// (published again, so a restart keeps it).
func (s *Server) relabel(ctx context.Context, prop ProfileProposal) {
	old := deviceInfo{Name: prop.Name}.label()
	runs, err := s.cfg.State.Runs(ctx)
	if err != nil {
		s.cfg.Log.Warn().Err(err).Msg("runs not relabelled")
		return
	}
	for _, pub := range runs {
		if pub.Entry.Hardware != old {
			continue
		}
		pub.Entry.Hardware = prop.Profile.Name
		if err := s.cfg.State.Publish(ctx, pub); err != nil {
			s.cfg.Log.Warn().Err(err).Str("run", pub.Entry.RunID).Msg("run not relabelled")
			continue
		}
		if pub.Entry.Public() {
			s.board.Put(pub.Entry)
		} else {
			s.held[pub.Entry.RunID] = pub.Entry
		}
	}
}
