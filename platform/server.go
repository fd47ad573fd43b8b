package platform

import (
	"archive/zip"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/llm-energy-measure/lem/exporters/hfdataset"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// EventPublisher puts a verified bundle's events on the event stream, from
// which ingest stores them exactly once (bus.Publisher).
type EventPublisher interface {
	Publish(subject, msgID string, ev schemas.Event) error
	Flush(ctx context.Context) error
}

// Config assembles a platform server.
type Config struct {
	Store     *store.Store // where runs' events and results are read
	State     *State
	Publisher EventPublisher
	// Stored waits until the events published so far are in Store (ingest
	// caught up; bus.WaitIngested): a run is published only once its page,
	// timeline and bundle can read them. Nil: no wait.
	Stored func(ctx context.Context) error
	Limits Limits
	// UploadsPerHour bounds each user's uploads (0: 20).
	UploadsPerHour int
	ToolVersion    string
	Log            zerolog.Logger
	// Providers are the ways to sign in (none: tokens only).
	Providers []Provider
	// Admins and Moderators name users (provider:login, id, or e-mail)
	// given those roles at every sign-in.
	Admins, Moderators []string
	// SecureCookies marks cookies Secure (the platform is served over
	// HTTPS, e.g. behind a TLS proxy).
	SecureCookies bool
	// PartsDir holds bundles being uploaded in parts (resumable uploads);
	// empty: only whole uploads.
	PartsDir string
	// Jobs is the remote-execution queue (nil: the platform runs no jobs).
	Jobs *Jobs
	// Notifier delivers webhooks and e-mail (nil: none).
	Notifier *Notifier
	// Prices price job estimates.
	Prices Prices
	// Moderate holds every verified upload for a moderator's decision:
	// only approved runs are on the public leaderboard.
	Moderate bool
	// WarmOverviews builds, in the background after start, the power
	// overviews of the most recently published runs, so that their pages'
	// first timeline is as fast as the next.
	WarmOverviews bool
}

// Server is the results platform: the JSON API and the embedded UI.
type Server struct {
	cfg   Config
	board *Board
	mux   *http.ServeMux

	mu      sync.Mutex
	details map[string]*detail // recomputed results by run, most recent use last
	order   []string
	// analyses counts the runs recomputed from the store (tests).
	analyses atomic.Int64
	uploads  map[string][]time.Time // per user, the last hour's
	busy     map[string]bool        // runs being uploaded
	held     map[string]Entry       // submitted runs not public (awaiting or refused a moderator's approval)
	ovs      overviews
	lbCache  map[string][]byte // leaderboard answers of board generation lbGen
	lbGen    uint64
	partsMu  sync.Mutex // serialises writes of upload parts
	key      []byte     // signs sign-in cookies (per process)
	signins  *limiter   // sign-in attempts per client address
	live     live       // jobs' progress feeds
}

type detail struct {
	result *analytics.RunResult
	json   []byte
}

const detailCache = 32

// New loads the published runs from the state and returns the server.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Limits.MaxBytes == 0 {
		cfg.Limits = DefaultLimits
	}
	if cfg.UploadsPerHour == 0 {
		cfg.UploadsPerHour = 20
	}
	s := &Server{cfg: cfg, board: NewBoard(), details: map[string]*detail{}, lbCache: map[string][]byte{}, uploads: map[string][]time.Time{},
		busy: map[string]bool{}, held: map[string]Entry{}, key: make([]byte, 32), signins: newLimiter(30, time.Minute)}
	if _, err := rand.Read(s.key); err != nil {
		return nil, err
	}
	runs, err := cfg.State.Runs(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading published runs: %w", err)
	}
	if err := LoadAcceptedProfiles(ctx, cfg.State); err != nil {
		return nil, fmt.Errorf("loading accepted hardware profiles: %w", err)
	}
	for _, p := range runs {
		if p.Entry.Public() {
			s.board.Put(p.Entry)
		} else {
			s.held[p.Entry.RunID] = p.Entry
		}
	}
	s.routes()
	if cfg.Jobs != nil {
		// Confirmed jobs wait for a free GPU set and are released in fair
		// order (dispatch.go); a job whose last delivery died is failed.
		go func() {
			if err := cfg.Jobs.RunDispatcher(ctx); err != nil {
				cfg.Log.Error().Err(err).Msg("the job dispatcher stopped")
			}
		}()
		go func() {
			if err := cfg.Jobs.WatchMaxDeliveries(ctx); err != nil {
				cfg.Log.Error().Err(err).Msg("the max-deliveries watch stopped")
			}
		}()
	}
	if cfg.WarmOverviews {
		slices.SortFunc(runs, func(a, b Published) int { return cmp.Compare(b.Entry.PublishedNS, a.Entry.PublishedNS) })
		go func() {
			for _, p := range runs[:min(len(runs), overviewCache)] {
				if ctx.Err() != nil {
					return
				}
				if err := s.loadOverview(ctx, p.Entry.RunID); err != nil {
					cfg.Log.Debug().Err(err).Str("run", p.Entry.RunID).Msg("power overview not built")
				}
			}
		}()
	}
	return s, nil
}

// Board returns the leaderboard (for tests and benchmarks).
func (s *Server) Board() *Board { return s.board }

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return securityHeaders(s.mux) }

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "runs": s.board.Len(), "version": s.cfg.ToolVersion})
	})
	m.HandleFunc("GET /api/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	m.HandleFunc("GET /api/leaderboard", s.handleLeaderboard)
	m.HandleFunc("GET /api/runs/{id}", s.handleRun)
	m.HandleFunc("GET /api/runs/{id}/timeline", s.handleTimeline)
	m.HandleFunc("GET /api/runs/{id}/bundle", s.handleBundle)
	m.HandleFunc("GET /api/runs/{id}/dataset", s.handleDataset)
	m.HandleFunc("POST /api/uploads", s.handleUpload)
	m.HandleFunc("GET /api/uploads/{id}", s.handleUploadState)
	m.HandleFunc("GET /api/uploads/parts/{hash}", s.handlePartState)
	m.HandleFunc("PUT /api/uploads/parts/{hash}", s.handlePart)
	m.HandleFunc("POST /api/uploads/parts/{hash}/complete", s.handlePartComplete)
	m.HandleFunc("GET /api/me", s.handleMe)
	m.HandleFunc("GET /api/tokens", s.authed(s.handleTokens))
	m.HandleFunc("POST /api/tokens", s.authed(s.handleCreateToken))
	m.HandleFunc("DELETE /api/tokens/{hash}", s.authed(s.handleRevokeToken))
	m.HandleFunc("GET /api/moderation", s.moderator(s.handleQueue))
	m.HandleFunc("POST /api/moderation/{id}", s.moderator(s.handleDecide))
	m.HandleFunc("GET /api/moderation/log", s.moderator(s.handleAuditLog))
	m.HandleFunc("GET /api/moderation/profiles", s.moderator(s.handleProposals))
	m.HandleFunc("POST /api/moderation/profiles/{key}", s.moderator(s.handleDecideProposal))
	m.HandleFunc("GET /api/users/{id}", s.handleProfile)
	m.HandleFunc("GET /api/jobs", s.withJobs(s.handleJobs))
	m.HandleFunc("POST /api/jobs", s.withJobs(s.handleSubmitJob))
	m.HandleFunc("POST /api/jobs/check", s.withJobs(s.handleCheckJob))
	m.HandleFunc("GET /api/jobs/templates", s.withJobs(s.handleTemplates))
	m.HandleFunc("GET /api/jobs/schema", s.handleJobSchema)
	m.HandleFunc("GET /experiment.schema.json", s.handleSchemaFile)
	m.HandleFunc("GET /api/jobs/{id}", s.withJobs(s.handleJob))
	m.HandleFunc("POST /api/jobs/{id}/confirm", s.withJobs(s.handleConfirmJob))
	m.HandleFunc("POST /api/jobs/{id}/cancel", s.withJobs(s.handleCancelJob))
	m.HandleFunc("GET /api/jobs/{id}/live", s.withJobs(s.handleLive))
	m.HandleFunc("GET /api/notifications", s.authed(s.handleSubscriptions))
	m.HandleFunc("POST /api/notifications/webhooks", s.withNotifier(s.handleAddWebhook))
	m.HandleFunc("DELETE /api/notifications/webhooks/{id}", s.withNotifier(s.handleDeleteWebhook))
	m.HandleFunc("GET /api/notifications/deliveries/{id}", s.withNotifier(s.handleDeliveries))
	m.HandleFunc("PUT /api/notifications/email", s.withNotifier(s.handleEmail))
	m.HandleFunc("GET /api/dataset", s.handleDatasetInfo)
	m.HandleFunc("GET /api/dataset.zip", s.handlePublicDataset)
	m.HandleFunc("GET /embed/badge.svg", s.handleBadge)
	m.HandleFunc("GET /embed/leaderboard", s.handleEmbedBoard)
	m.HandleFunc("GET /auth/providers", s.handleProviders)
	m.HandleFunc("GET /auth/login/{provider}", s.handleLogin)
	m.HandleFunc("GET /auth/callback/{provider}", s.handleCallback)
	m.HandleFunc("POST /auth/logout", s.handleLogout)
	m.Handle("GET /", uiHandler())
	s.mux = m
}

// routeList is every API route, for the OpenAPI check.
var routeList = []string{"GET /api/health", "GET /api/openapi.json", "GET /api/leaderboard", "GET /api/runs/{id}",
	"GET /api/runs/{id}/timeline", "GET /api/runs/{id}/bundle", "GET /api/runs/{id}/dataset", "POST /api/uploads", "GET /api/uploads/{id}",
	"GET /api/uploads/parts/{hash}", "PUT /api/uploads/parts/{hash}", "POST /api/uploads/parts/{hash}/complete", "GET /api/me", "GET /api/tokens",
	"POST /api/tokens", "DELETE /api/tokens/{hash}", "GET /api/moderation", "POST /api/moderation/{id}", "GET /api/moderation/log", "GET /api/moderation/profiles", "POST /api/moderation/profiles/{key}",
	"GET /api/users/{id}", "GET /api/jobs", "POST /api/jobs", "GET /api/jobs/{id}", "POST /api/jobs/{id}/confirm", "POST /api/jobs/{id}/cancel",
	"GET /api/jobs/{id}/live", "POST /api/jobs/check", "GET /api/jobs/templates", "GET /api/jobs/schema", "GET /experiment.schema.json", "GET /embed/badge.svg", "GET /embed/leaderboard", "GET /api/dataset", "GET /api/dataset.zip",
	"GET /api/notifications", "POST /api/notifications/webhooks", "DELETE /api/notifications/webhooks/{id}", "GET /api/notifications/deliveries/{id}",
	"PUT /api/notifications/email",
	"GET /auth/providers", "GET /auth/login/{provider}",
	"GET /auth/callback/{provider}", "POST /auth/logout"}

// apiError is every error response's body.
type apiError struct {
	Error  string  `json:"error"`
	Report *Report `json:"report,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, a...)})
}

// securityHeaders: a strict content security policy (no inline script,
// nothing from elsewhere), no framing, no sniffing.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) handleLeaderboard(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q := Query{Sort: v.Get("sort"), Desc: v.Get("order") == "desc", VerifiedOnly: v.Get("verified") == "1" || v.Get("verified") == "true",
		Text: v.Get("q"), Filters: map[string]string{}}
	var err error
	if q.Page, err = intParam(v.Get("page"), 1); err != nil {
		writeErr(w, http.StatusBadRequest, "page: %v", err)
		return
	}
	if q.PerPage, err = intParam(v.Get("per_page"), 50); err != nil {
		writeErr(w, http.StatusBadRequest, "per_page: %v", err)
		return
	}
	for _, d := range Dimensions {
		if x := v.Get(d); x != "" {
			q.Filters[d] = x
		}
	}
	for k := range v {
		if !slices.Contains(Dimensions, k) && !slices.Contains([]string{"sort", "order", "verified", "q", "page", "per_page"}, k) {
			writeErr(w, http.StatusBadRequest, "unknown parameter %q", k)
			return
		}
	}
	// The same question of the same board has the same answer: popular
	// pages are served from memory until the board changes.
	key := r.URL.Query().Encode()
	gen := s.board.Generation()
	s.mu.Lock()
	if s.lbGen != gen {
		clear(s.lbCache)
		s.lbGen = gen
	}
	body, ok := s.lbCache[key]
	s.mu.Unlock()
	if !ok {
		res, err := s.board.Query(q)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "%v", err)
			return
		}
		if body, err = json.Marshal(res); err != nil {
			writeErr(w, http.StatusInternalServerError, "%v", err)
			return
		}
		s.mu.Lock()
		if s.lbGen == gen {
			if len(s.lbCache) >= leaderboardCache {
				clear(s.lbCache)
			}
			s.lbCache[key] = body
		}
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

const leaderboardCache = 1024

func intParam(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a positive integer", s)
	}
	return n, nil
}

// detailJSON returns a run's figures as its page shows them: from memory,
// else as this version of lem recomputed them earlier (kept in the
// platform's state, so a restarted platform does not recompute every run
// page), else recomputed from the store now.
func (s *Server) detailJSON(ctx context.Context, runID string) ([]byte, error) {
	if d := s.cached(runID); d != nil {
		return d.json, nil
	}
	if s.cfg.State != nil {
		b, ok, err := s.cfg.State.LoadDetail(ctx, runID, s.cfg.ToolVersion)
		if err != nil {
			s.cfg.Log.Warn().Err(err).Str("run", runID).Msg("kept figures not read; recomputing")
		} else if ok {
			s.remember(runID, &detail{json: b})
			return b, nil
		}
	}
	d, err := s.result(ctx, runID)
	if err != nil {
		return nil, err
	}
	return d.json, nil
}

// result returns the run's recomputed result, from memory or recomputed
// from the store (and then kept; figures already kept in the state are
// not written again).
func (s *Server) result(ctx context.Context, runID string) (*detail, error) {
	d := s.cached(runID)
	if d != nil && d.result != nil {
		return d, nil
	}
	s.analyses.Add(1)
	r, err := analytics.AnalyzeRun(ctx, s.cfg.Store, runID)
	if err != nil {
		return nil, err
	}
	if d != nil { // its figures came from the state
		d = &detail{result: r, json: d.json}
		s.remember(runID, d)
		return d, nil
	}
	return s.keep(ctx, runID, r)
}

// cached returns the run's detail in memory (nil: none), as most recently
// used.
func (s *Server) cached(runID string) *detail {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.details[runID]
	if ok {
		s.touch(runID)
	}
	return d
}

// touch moves runID to the end of the use order (s.mu held).
func (s *Server) touch(runID string) {
	s.order = append(slices.DeleteFunc(s.order, func(x string) bool { return x == runID }), runID)
}

// keep remembers a run's recomputed result and keeps its page's figures
// in the platform's state.
func (s *Server) keep(ctx context.Context, runID string, r *analytics.RunResult) (*detail, error) {
	d := &detail{result: r}
	var err error
	if d.json, err = json.Marshal(runDetail(r)); err != nil {
		return nil, err
	}
	s.remember(runID, d)
	if s.cfg.State != nil {
		if err := s.cfg.State.SaveDetail(ctx, runID, s.cfg.ToolVersion, d.json); err != nil {
			s.cfg.Log.Warn().Err(err).Str("run", runID).Msg("figures not kept")
		}
	}
	return d, nil
}

func (s *Server) remember(runID string, d *detail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.details[runID] = d
	s.touch(runID)
	for len(s.order) > detailCache {
		delete(s.details, s.order[0])
		s.order = s.order[1:]
	}
}

func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	id, ok := s.publishedRun(w, r)
	if !ok {
		return
	}
	p, ok, err := s.cfg.State.Run(r.Context(), id)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "reading run %s: %v", id, err)
		return
	}
	if !ok {
		writeErr(w, http.StatusNotFound, "no published run %q", id)
		return
	}
	b, err := s.detailJSON(r.Context(), id)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "recomputing run %s: %v", id, err)
		return
	}
	// The moderators' decisions and reasons are for the submitter and the
	// moderators.
	var decisions []Decision
	if v, err := s.who(r); err == nil && (v.User.ID == p.Entry.Submitter || v.User.Role == RoleModerator || v.User.Role == RoleAdmin) {
		decisions = p.Decisions
	}
	writeJSON(w, http.StatusOK, struct {
		Entry     Entry           `json:"entry"`
		Report    *Report         `json:"report"`
		Decisions []Decision      `json:"decisions,omitempty"`
		Result    json.RawMessage `json:"result"`
	}{p.Entry, p.Report, decisions, b})
}

func (s *Server) handleUploadState(w http.ResponseWriter, r *http.Request) {
	u, ok, err := s.cfg.State.Upload(r.Context(), r.PathValue("id"))
	switch {
	case err != nil:
		writeErr(w, http.StatusInternalServerError, "%v", err)
	case !ok:
		writeErr(w, http.StatusNotFound, "no upload of run %q", r.PathValue("id"))
	default:
		writeJSON(w, http.StatusOK, u)
	}
}

// PublishLocal publishes every run of the store that is not yet on the
// platform, recomputed from its events and checked like an upload, as
// "recomputed" (not uploaded, so not "verified"), submitted by who.
func (s *Server) PublishLocal(ctx context.Context, who string) (int, error) {
	ids, err := s.cfg.Store.RunIDs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if _, ok := s.board.Get(id); ok {
			continue
		}
		r, rep, err := Verify(ctx, s.cfg.Store, id, nil)
		if err != nil {
			s.cfg.Log.Warn().Err(err).Str("run", id).Msg("not published")
			continue
		}
		e, err := s.entry(ctx, s.cfg.Store, r)
		if err != nil {
			return n, err
		}
		e.Verification = "recomputed"
		if !rep.Passed() {
			e.Verification = "failed"
		}
		e.Submitter = who
		if err := s.cfg.State.Publish(ctx, Published{Entry: e, Report: rep}); err != nil {
			return n, err
		}
		s.board.Put(e)
		n++
		if err := s.warmOverview(ctx, s.cfg.Store, id); err != nil {
			s.cfg.Log.Warn().Err(err).Str("run", id).Msg("power overview not built")
		}
	}
	return n, nil
}

// entry builds a run's entry, with its devices' names from st.
func (s *Server) entry(ctx context.Context, st *store.Store, r *analytics.RunResult) (Entry, error) {
	evs, err := st.RunEvents(ctx, r.RunID)
	if err != nil || len(evs) == 0 {
		return Entry{}, fmt.Errorf("run %s: no run events (%v)", r.RunID, err)
	}
	info, err := runDeviceInfo(ctx, st, r)
	if err != nil {
		return Entry{}, err
	}
	var ns []string
	for _, d := range r.Devices {
		ns = append(ns, info[d].label())
	}
	s.proposeUnknown(ctx, r.RunID, info)
	e := NewEntry(r, evs[0], ns)
	e.PublishedNS = time.Now().UnixNano()
	return e, nil
}

// handleUpload takes a bundle: authenticated (upload scope), rate-limited,
// decoded and validated like ingest, recomputed and checked; a verified
// bundle's events go to the event stream and its run onto the board.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.uploader(w, r)
	if !ok {
		return
	}
	if !s.allowUpload(tok.User) {
		writeErr(w, http.StatusTooManyRequests, "user %s: over %d uploads in the last hour", tok.User, s.cfg.UploadsPerHour)
		return
	}
	if r.ContentLength > s.cfg.Limits.MaxBytes {
		writeErr(w, http.StatusRequestEntityTooLarge, "bundle of %d bytes: over the limit of %d", r.ContentLength, s.cfg.Limits.MaxBytes)
		return
	}
	s.accept(w, r, tok, http.MaxBytesReader(w, r.Body, s.cfg.Limits.MaxBytes+1), r.Header.Get("X-Lem-Content-Hash"))
}

// uploader authenticates an upload's token (upload scope) or answers 401.
func (s *Server) uploader(w http.ResponseWriter, r *http.Request) (Token, bool) {
	tok, err := s.cfg.State.Authenticate(r.Context(), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), ScopeUpload)
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			writeErr(w, http.StatusUnauthorized, "%v", err)
		} else {
			writeErr(w, http.StatusInternalServerError, "%v", err)
		}
		return Token{}, false
	}
	return tok, true
}

// accept decodes, verifies, stores and publishes a bundle read from body,
// whose content hash must be wantHash when that is given.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, tok Token, body io.Reader, wantHash string) {
	ctx := r.Context()
	b, err := ReadBundle(body, s.cfg.Limits)
	if err != nil {
		code := http.StatusBadRequest
		if strings.Contains(err.Error(), "size limit") {
			code = http.StatusRequestEntityTooLarge
		}
		writeErr(w, code, "%v", err)
		return
	}
	if wantHash != "" && wantHash != b.Hash {
		writeErr(w, http.StatusBadRequest, "content hash %s, the header says %s: the bundle changed in transit", b.Hash, wantHash)
		return
	}
	signer, err := checkSignature(r, b.Hash)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	id := b.Manifest.RunID
	// One upload of a run at a time; the same content again is a no-op.
	s.mu.Lock()
	if s.busy[id] {
		s.mu.Unlock()
		writeErr(w, http.StatusConflict, "run %s: an upload of it is in progress", id)
		return
	}
	s.busy[id] = true
	s.mu.Unlock()
	defer func() { s.mu.Lock(); delete(s.busy, id); s.mu.Unlock() }()
	if prev, ok, err := s.cfg.State.Upload(ctx, id); err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	} else if ok && prev.State == "verified" {
		if prev.Hash == b.Hash {
			writeJSON(w, http.StatusOK, prev)
			return
		}
		writeErr(w, http.StatusConflict, "run %s was uploaded with other content (hash %s); a run id names one run", id, prev.Hash)
		return
	}
	if _, ok := s.board.Get(id); ok {
		if prev, _, _ := s.cfg.State.Upload(ctx, id); prev.State != "verified" {
			writeErr(w, http.StatusConflict, "run %s is already on the platform from its own store", id)
			return
		}
	}
	// A worker's upload of a job's run is published in the submitter's
	// name; only worker tokens may name a job.
	submitter, jobID := tok.User, r.Header.Get(JobHeader)
	if jobID != "" {
		if s.cfg.Jobs == nil || !slices.Contains(tok.Scopes, ScopeWorker) {
			writeErr(w, http.StatusForbidden, "only a worker's token (scope worker) uploads a job's run")
			return
		}
		job, ok, err := s.cfg.Jobs.Get(ctx, jobID)
		if err != nil || !ok {
			writeErr(w, http.StatusBadRequest, "job %q: not found (%v)", jobID, err)
			return
		}
		if job.State != JobRunning {
			writeErr(w, http.StatusConflict, "job %s is %s, not running: its runs are not taken", jobID, job.State)
			return
		}
		submitter = job.User
	}
	res, rep, err := Verify(ctx, b.Store(), id, b.Manifest.Results)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	rep.Hash = b.Hash
	if signer != "" {
		rep.Checks = append(rep.Checks, Check{Name: "signature", Status: "pass", Detail: "content hash signed by NKey " + signer})
	} else {
		rep.Checks = append(rep.Checks, Check{Name: "signature", Status: "n/a", Detail: "unsigned (lem upload -nkey signs with the host's NKey)"})
	}
	up := Upload{RunID: id, Hash: b.Hash, User: submitter, Signer: signer, Report: rep, AtNS: time.Now().UnixNano(), Job: jobID}
	if !rep.Passed() {
		up.State, up.Reason = "refused", rep.Failures()
		if err := s.cfg.State.SetUpload(ctx, up); err != nil {
			s.cfg.Log.Error().Err(err).Msg("recording a refusal")
		}
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: "verification failed: " + up.Reason, Report: rep})
		return
	}
	if err := s.store(ctx, b); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "storing run %s: %v (nothing published; upload again)", id, err)
		return
	}
	if s.cfg.Stored != nil {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := s.cfg.Stored(wctx)
		cancel()
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, "run %s is on the event stream but not yet readable from the store: %v (nothing published; upload again)", id, err)
			return
		}
	}
	e, err := s.entry(ctx, b.Store(), res)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	e.Verification, e.Submitter = "verified", submitter
	if s.cfg.Moderate {
		e.Moderation = ModerationPending
	}
	if err := s.cfg.State.Publish(ctx, Published{Entry: e, Report: rep}); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	up.State = "verified"
	if !e.Public() {
		up.Reason = AwaitingModeration
	}
	if err := s.cfg.State.SetUpload(ctx, up); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if e.Public() {
		s.board.Put(e)
	} else {
		s.mu.Lock()
		s.held[id] = e
		s.mu.Unlock()
	}
	if err := s.warmOverview(ctx, b.Store(), id); err != nil {
		s.cfg.Log.Warn().Err(err).Str("run", id).Msg("power overview not built")
	}
	if err := s.jobUploaded(ctx, jobID, tok.User, res); err != nil {
		s.cfg.Log.Warn().Err(err).Str("run", id).Str("job", jobID).Msg("job not updated")
	}
	if _, err := s.keep(ctx, id, res); err != nil {
		s.cfg.Log.Warn().Err(err).Str("run", id).Msg("figures not kept")
	}
	s.cfg.Log.Info().Str("run", id).Str("user", tok.User).Int64("bytes", b.Bytes).Msg("upload verified")
	writeJSON(w, http.StatusCreated, up)
}

// store puts the bundle's events on the event stream, each with a message
// id derived from the content hash (JetStream drops a re-sent duplicate;
// ingest's watermark does the rest), and waits for the acks.
func (s *Server) store(ctx context.Context, b *Bundle) error {
	if s.cfg.Publisher == nil {
		return errors.New("this platform has no event stream to store into")
	}
	i := 0
	for _, name := range bundleTables {
		t := b.Tables[name]
		if t == nil {
			continue
		}
		evs, err := schemas.EventsOf(t, b.Tables[schemas.TableDevice])
		if err != nil {
			return err
		}
		for _, ev := range evs {
			i++
			subject := subjectOf(ev)
			if err := s.cfg.Publisher.Publish(subject, fmt.Sprintf("%s-%d", b.Hash[:32], i), ev); err != nil {
				return err
			}
		}
	}
	return s.cfg.Publisher.Flush(ctx)
}

func subjectOf(ev schemas.Event) string {
	if id, ok := runOf(ev); ok {
		return schemas.RunSubject(ev.Kind(), id)
	}
	o, d, _ := deviceOf(ev)
	return schemas.DeviceSubject(ev.Kind(), o.Host, d.Index)
}

func (s *Server) allowUpload(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	ts := slices.DeleteFunc(s.uploads[user], func(t time.Time) bool { return now.Sub(t) > time.Hour })
	if len(ts) >= s.cfg.UploadsPerHour {
		s.uploads[user] = ts
		return false
	}
	s.uploads[user] = append(ts, now)
	return true
}

// handleBundle serves a published run as a bundle: every raw event its
// figures come from, with the platform's results in the manifest, so that
// anyone can recompute and check them (lem upload's format; ReadBundle and
// Verify, or lem analyze after loading it, read it).
func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) {
	id, ok := s.publishedRun(w, r)
	if !ok {
		return
	}
	var buf bytes.Buffer
	if _, _, err := WriteBundle(r.Context(), s.cfg.Store, id, s.cfg.ToolVersion, &buf); err != nil {
		writeErr(w, http.StatusInternalServerError, "bundling run %s: %v", id, err)
		return
	}
	w.Header().Set("Content-Type", "application/vnd.lem.bundle")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".lemb"))
	w.Write(buf.Bytes())
}

// handleDataset serves a published run as a Hugging Face dataset in a zip
// (lem export -format hf of this run: Parquet per table, the card, the
// results), built from the platform's store.
func (s *Server) handleDataset(w http.ResponseWriter, r *http.Request) {
	id, ok := s.publishedRun(w, r)
	if !ok {
		return
	}
	d, err := s.result(r.Context(), id)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "recomputing run %s: %v", id, err)
		return
	}
	dir, err := os.MkdirTemp("", "lem-dataset-*")
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer os.RemoveAll(dir)
	if _, err := hfdataset.Export(r.Context(), s.cfg.Store, s.cfg.Store, []string{id}, []*analytics.RunResult{d.result}, dir, s.cfg.ToolVersion); err != nil {
		writeErr(w, http.StatusInternalServerError, "exporting run %s: %v", id, err)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+"-dataset.zip"))
	if err := zipDir(w, dir, id); err != nil {
		s.cfg.Log.Warn().Err(err).Str("run", id).Msg("dataset download cut short")
	}
}

// checkSignature verifies an upload's NKey signature of its content hash
// (X-Lem-Signer, X-Lem-Signature) and returns the signer; "" when unsigned.
func checkSignature(r *http.Request, hash string) (string, error) {
	signer, sig := r.Header.Get("X-Lem-Signer"), r.Header.Get("X-Lem-Signature")
	if signer == "" && sig == "" {
		return "", nil
	}
	kp, err := nkeys.FromPublicKey(signer)
	if err != nil {
		return "", fmt.Errorf("X-Lem-Signer: not an NKey public key: %v", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return "", fmt.Errorf("X-Lem-Signature: not base64url: %v", err)
	}
	if err := kp.Verify([]byte(hash), raw); err != nil {
		return "", fmt.Errorf("the signature of NKey %s does not verify over content hash %s", signer, hash)
	}
	return signer, nil
}

// publishedRun returns the request's run id, or answers 404 when no such
// run is published.
func (s *Server) publishedRun(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if _, ok := s.board.Get(id); ok {
		return id, true
	}
	// A held submission is shown to its submitter and the moderators.
	s.mu.Lock()
	e, held := s.held[id]
	s.mu.Unlock()
	if held {
		if p, err := s.who(r); err == nil && (p.User.ID == e.Submitter || p.User.Role == RoleModerator || p.User.Role == RoleAdmin) {
			return id, true
		}
	}
	writeErr(w, http.StatusNotFound, "no published run %q", id)
	return "", false
}

// zipDir writes the files under dir to w as a zip, their names under
// prefix ("" for none).
func zipDir(w io.Writer, dir, prefix string) error {
	zw := zip.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		f, err := zw.Create(filepath.ToSlash(filepath.Join(prefix, rel)))
		if err != nil {
			return err
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(f, src)
		return err
	})
	if err != nil {
		return err
	}
	return zw.Close()
}
