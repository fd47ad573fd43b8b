package platform

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"golang.org/x/oauth2"
)

// signinProvider returns the request's provider, or answers 404 (no such
// provider) or 429 (too many sign-ins from the client) and returns nil.
func (s *Server) signinProvider(w http.ResponseWriter, r *http.Request) Provider {
	id := r.PathValue("provider")
	i := slices.IndexFunc(s.cfg.Providers, func(p Provider) bool { return p.ID() == id })
	if i < 0 {
		writeErr(w, http.StatusNotFound, "no sign-in provider %q", id)
		return nil
	}
	if !s.signins.allow(clientIP(r)) {
		writeErr(w, http.StatusTooManyRequests, "too many sign-ins from this address; wait a minute")
		return nil
	}
	return s.cfg.Providers[i]
}

func (s *Server) handleProviders(w http.ResponseWriter, r *http.Request) {
	type pv struct {
		ID   string `json:"id"`
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	out := []pv{}
	for _, p := range s.cfg.Providers {
		out = append(out, pv{p.ID(), p.Name(), "/auth/login/" + p.ID()})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleLogin sends the browser to the provider, with a fresh state, nonce
// and PKCE verifier kept in a signed cookie.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	p := s.signinProvider(w, r)
	if p == nil {
		return
	}
	st, err1 := randomSecret()
	nonce, err2 := randomSecret()
	if err := errors.Join(err1, err2); err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	f := flowState{Provider: p.ID(), State: st, Nonce: nonce, Verifier: oauth2.GenerateVerifier(),
		Return: safeReturn(r.URL.Query().Get("return")), Expires: time.Now().Add(10 * time.Minute).Unix()}
	s.setFlow(w, f)
	http.Redirect(w, r, p.AuthURL(f), http.StatusFound)
}

// handleCallback completes a sign-in: the state must be this browser's,
// the provider must vouch for the user; then a session cookie is set.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	p := s.signinProvider(w, r)
	if p == nil {
		return
	}
	f, err := s.takeFlow(w, r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "sign-in refused: %v", err)
		return
	}
	if e := r.URL.Query().Get("error"); e != "" {
		writeErr(w, http.StatusUnauthorized, "the provider refused the sign-in: %s %s", e, r.URL.Query().Get("error_description"))
		return
	}
	if f.Provider != p.ID() || r.URL.Query().Get("state") != f.State {
		writeErr(w, http.StatusBadRequest, "sign-in refused: the state does not match this browser's sign-in")
		return
	}
	u, err := p.Identify(r.Context(), r, f)
	if err != nil {
		s.cfg.Log.Warn().Err(err).Str("provider", p.ID()).Msg("sign-in failed")
		writeErr(w, http.StatusUnauthorized, "sign-in with %s failed: %v", p.Name(), err)
		return
	}
	secret, _, u, err := s.cfg.State.SignIn(r.Context(), u, s.cfg.Admins, s.cfg.Moderators)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: secret, Path: "/", HttpOnly: true, Secure: s.cfg.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(SessionTTL / time.Second)})
	s.cfg.Log.Info().Str("user", u.ID).Str("login", u.Login).Str("role", u.Role).Msg("signed in")
	http.Redirect(w, r, f.Return, http.StatusFound)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	p, err := s.who(r)
	if err != nil || p.Session == nil {
		writeErr(w, http.StatusUnauthorized, "not signed in")
		return
	}
	if err := s.checkCSRF(r, p); err != nil {
		writeErr(w, http.StatusForbidden, "%v", err)
		return
	}
	c, _ := r.Cookie(sessionCookie)
	if err := s.cfg.State.SignOut(r.Context(), c.Value); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookies})
	writeJSON(w, http.StatusOK, map[string]bool{"signed_out": true})
}

// handleMe says who is signed in: {"user": null} for nobody (an anonymous
// visitor is not an error), 401 for a presented token that is not valid.
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	out := struct {
		User *User  `json:"user"`
		CSRF string `json:"csrf,omitempty"`
		// Jobs: this platform runs jobs on GPU workers (the UI offers
		// the jobs pages only then).
		Jobs bool `json:"jobs"`
	}{Jobs: s.cfg.Jobs != nil}
	p, err := s.who(r)
	if err != nil {
		_, cookie := r.Cookie(sessionCookie)
		if r.Header.Get("Authorization") != "" || cookie == nil {
			writeErr(w, http.StatusUnauthorized, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	out.User = &p.User
	if p.Session != nil {
		out.CSRF = p.Session.CSRF
	}
	writeJSON(w, http.StatusOK, out)
}

// authed runs h for an authenticated principal; state-changing methods
// need the CSRF token when the principal is a browser session.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, p *principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.who(r)
		if err != nil {
			writeErr(w, http.StatusUnauthorized, "%v", err)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := s.checkCSRF(r, p); err != nil {
				writeErr(w, http.StatusForbidden, "%v", err)
				return
			}
		}
		h(w, r, p)
	}
}

func (s *Server) handleTokens(w http.ResponseWriter, r *http.Request, p *principal) {
	user := p.User.ID
	if p.User.Role == RoleAdmin && r.URL.Query().Get("all") == "1" {
		user = ""
	}
	ts, err := s.cfg.State.Tokens(r.Context(), user)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

// handleCreateToken makes an API token for the signed-in user; the secret
// is in this answer only.
func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request, p *principal) {
	var req struct {
		Name        string   `json:"name"`
		Scopes      []string `json:"scopes"`
		ExpiresDays int      `json:"expires_days"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "token request: %v", err)
		return
	}
	switch {
	case req.Name == "" || len(req.Name) > 100:
		writeErr(w, http.StatusBadRequest, "name the token (1–100 characters)")
		return
	case len(req.Scopes) == 0:
		writeErr(w, http.StatusBadRequest, "give the token at least one scope (upload, read)")
		return
	case req.ExpiresDays < 0 || req.ExpiresDays > 366:
		writeErr(w, http.StatusBadRequest, "expires_days: 0 (never) … 366")
		return
	case slices.Contains(req.Scopes, ScopeAdmin) && p.User.Role != RoleAdmin:
		writeErr(w, http.StatusForbidden, "only admins make admin tokens")
		return
	}
	if p.Token != nil && !slices.Contains(p.Token.Scopes, ScopeAdmin) {
		writeErr(w, http.StatusForbidden, "an API token cannot make tokens; sign in")
		return
	}
	secret, t, err := s.cfg.State.CreateToken(r.Context(), p.User.ID, req.Name, req.Scopes, time.Duration(req.ExpiresDays)*24*time.Hour)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		Secret string `json:"secret"`
		Token  Token  `json:"token"`
	}{secret, t})
}

func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request, p *principal) {
	h := r.PathValue("hash")
	t, ok, err := s.cfg.State.Token(r.Context(), h)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if !ok || (t.User != p.User.ID && p.User.Role != RoleAdmin) {
		writeErr(w, http.StatusNotFound, "no token %s of yours", h)
		return
	}
	if err := s.cfg.State.RevokeToken(r.Context(), h); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"revoked": true})
}
