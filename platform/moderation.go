package platform

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/schemas"
)

// Moderation states of a published run. A platform run with moderation
// (lem web -moderate) holds every verified upload as pending: only an
// approved run is on the public leaderboard. Without moderation the state
// is empty and every verified upload is public at once.
const (
	ModerationPending  = "pending"
	ModerationApproved = "approved"
	ModerationRejected = "rejected"
	ModerationChanges  = "changes_requested"
)

// AwaitingModeration is a held upload's reason.
const AwaitingModeration = "verified; awaiting a moderator's approval before it is public"

// Public says whether the run is on the public leaderboard.
func (e Entry) Public() bool { return e.Moderation == "" || e.Moderation == ModerationApproved }

// Decision is a moderator's verdict on a submission, recorded as a
// platform event (moderation.<decision>) and kept with the run.
type Decision struct {
	RunID     string `json:"run_id"`
	Decision  string `json:"decision"` // approved, rejected, changes_requested
	Reason    string `json:"reason,omitempty"`
	Moderator string `json:"moderator"`
	AtNS      int64  `json:"at_ns"`
}

// Decide records a decision on a held run and returns the run as it now
// stands.
func (s *State) Decide(ctx context.Context, d Decision) (Published, error) {
	p, ok, err := s.Run(ctx, d.RunID)
	if err != nil {
		return Published{}, err
	}
	if !ok {
		return Published{}, fmt.Errorf("no submitted run %q", d.RunID)
	}
	if err := s.record(ctx, "moderation."+d.Decision, d.RunID, d.Moderator, d); err != nil {
		return Published{}, err
	}
	p.Entry.Moderation = d.Decision
	p.Decisions = append(p.Decisions, d)
	return p, put(ctx, s.runs, kvKey(d.RunID), p)
}

// AuditLog returns the moderation decisions recorded on the event stream,
// oldest first: the log is the events themselves, not a copy.
func (s *State) AuditLog(ctx context.Context) ([]Decision, error) {
	subj := SubjectPlatform + ".moderation.>"
	name, err := s.js.StreamNameBySubject(ctx, subj)
	if err != nil {
		return nil, fmt.Errorf("the stream of %s: %w", subj, err)
	}
	stream, err := s.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, err
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	if n == 0 {
		return nil, nil
	}
	c, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return nil, err
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return nil, err
	}
	var out []Decision
	for m := range batch.Messages() {
		ev, err := schemas.Decode(m.Data())
		if err != nil {
			return nil, fmt.Errorf("platform event %s: %w", m.Subject(), err)
		}
		pe, ok := ev.(*schemas.PlatformEvent)
		if !ok {
			continue
		}
		var d Decision
		if err := json.Unmarshal([]byte(pe.Payload), &d); err != nil {
			return nil, fmt.Errorf("moderation event of %s: %w", pe.Subject, err)
		}
		out = append(out, d)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return out, err
	}
	return out, nil
}

// moderator authenticates a moderator or admin (401/403 otherwise).
func (s *Server) moderator(h func(w http.ResponseWriter, r *http.Request, p *principal)) http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, p *principal) {
		if p.User.Role != RoleModerator && p.User.Role != RoleAdmin {
			writeErr(w, http.StatusForbidden, "user %s is not a moderator", p.User.ID)
			return
		}
		h(w, r, p)
	})
}

// handleQueue lists the submissions awaiting a decision (and those sent
// back for changes), oldest first, with their verification reports.
func (s *Server) handleQueue(w http.ResponseWriter, r *http.Request, _ *principal) {
	runs, err := s.cfg.State.Runs(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	queue := []Published{}
	for _, p := range runs {
		if m := p.Entry.Moderation; m == ModerationPending || m == ModerationChanges {
			queue = append(queue, p)
		}
	}
	slices.SortFunc(queue, func(a, b Published) int { return cmp.Compare(a.Entry.PublishedNS, b.Entry.PublishedNS) })
	writeJSON(w, http.StatusOK, map[string]any{"moderated": s.cfg.Moderate, "queue": queue})
}

// decisionRequest is a moderator's decision as a request carries it.
type decisionRequest struct {
	Decision string `json:"decision"`
	Reason   string `json:"reason"` // trimmed
	// Profile: accepting a proposed hardware profile gives its datasheet
	// figures (id, name, memory_gb, limit_w).
	Profile *Profile `json:"profile,omitempty"`
}

// readDecision decodes a decision (400 for a malformed one).
func readDecision(w http.ResponseWriter, r *http.Request) (decisionRequest, bool) {
	var req decisionRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "decision: %v", err)
		return req, false
	}
	req.Reason = strings.TrimSpace(req.Reason)
	return req, true
}

// handleDecide records a moderator's decision on one submission: approve
// puts it on the leaderboard; reject and request changes need a reason,
// which the submitter sees.
func (s *Server) handleDecide(w http.ResponseWriter, r *http.Request, p *principal) {
	req, ok := readDecision(w, r)
	if !ok {
		return
	}
	switch req.Decision {
	case ModerationApproved:
	case ModerationRejected, ModerationChanges:
		if req.Reason == "" {
			writeErr(w, http.StatusBadRequest, "decision %s needs a reason (the submitter sees it)", req.Decision)
			return
		}
	default:
		writeErr(w, http.StatusBadRequest, "decision %q: want approved, rejected or changes_requested", req.Decision)
		return
	}
	if len(req.Reason) > 2000 {
		writeErr(w, http.StatusBadRequest, "reason of %d bytes: at most 2000", len(req.Reason))
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.held[id]
	if !ok {
		if _, public := s.board.Get(id); public {
			writeErr(w, http.StatusConflict, "run %s is already public", id)
		} else {
			writeErr(w, http.StatusNotFound, "no submission %q awaits a decision", id)
		}
		return
	}
	if cur.Moderation == ModerationRejected {
		writeErr(w, http.StatusConflict, "run %s was rejected; a rejection is final (submit the run again under a new id)", id)
		return
	}
	d := Decision{RunID: id, Decision: req.Decision, Reason: req.Reason, Moderator: p.User.ID, AtNS: time.Now().UnixNano()}
	pub, err := s.cfg.State.Decide(r.Context(), d)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if pub.Entry.Public() {
		delete(s.held, id)
		s.board.Put(pub.Entry)
	} else {
		s.held[id] = pub.Entry
	}
	s.cfg.Log.Info().Str("run", id).Str("decision", d.Decision).Str("moderator", d.Moderator).Msg("moderation decision")
	writeJSON(w, http.StatusOK, pub)
}

func (s *Server) handleAuditLog(w http.ResponseWriter, r *http.Request, _ *principal) {
	log, err := s.cfg.State.AuditLog(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if log == nil {
		log = []Decision{}
	}
	writeJSON(w, http.StatusOK, log)
}

// UserPage is a user's public page: submissions and how many passed.
type UserPage struct {
	User        string      `json:"user"`
	Login       string      `json:"login,omitempty"`
	Submissions []Published `json:"submissions"` // public ones; all of them for the user and moderators
	Verified    int         `json:"verified"`    // uploads verified (recomputed, every check passed)
	Public      int         `json:"public"`      // on the leaderboard
	Refused     int         `json:"refused"`     // uploads refused by verification
}

// handleProfile answers a user's submission history: everyone sees the
// public runs and the counts; the user and moderators also see held ones.
func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	viewer, _ := s.who(r)
	all := viewer != nil && (viewer.User.ID == id || viewer.User.Role == RoleModerator || viewer.User.Role == RoleAdmin)
	runs, err := s.cfg.State.Runs(ctx)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	pr := UserPage{User: id, Submissions: []Published{}}
	if u, ok, _ := get[User](ctx, s.cfg.State.users, kvKey(id)); ok {
		pr.Login = u.Login
	}
	for _, p := range runs {
		if p.Entry.Submitter != id {
			continue
		}
		if p.Entry.Verification == "verified" {
			pr.Verified++
		}
		if p.Entry.Public() {
			pr.Public++
		}
		if all || p.Entry.Public() {
			pr.Submissions = append(pr.Submissions, p)
		}
	}
	ups, err := s.cfg.State.Uploads(ctx)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	for _, u := range ups {
		if u.User == id && u.State == "refused" {
			pr.Refused++
		}
	}
	if len(pr.Submissions) == 0 && pr.Verified == 0 && pr.Refused == 0 && pr.Login == "" {
		writeErr(w, http.StatusNotFound, "no user %q", id)
		return
	}
	slices.SortFunc(pr.Submissions, func(a, b Published) int { return cmp.Compare(b.Entry.PublishedNS, a.Entry.PublishedNS) })
	writeJSON(w, http.StatusOK, pr)
}
