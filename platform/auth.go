package platform

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Roles of users.
const (
	RoleUser      = "user"
	RoleModerator = "moderator"
	RoleAdmin     = "admin"
)

// User is a person signed in through a provider.
type User struct {
	ID        string `json:"id"` // provider:subject, e.g. github:583231, oidc:<issuer hash>:<sub>
	Login     string `json:"login"`
	Name      string `json:"name"`
	Email     string `json:"email,omitempty"`
	Provider  string `json:"provider"`
	Role      string `json:"role"`
	CreatedNS int64  `json:"created_ns"`
	LastNS    int64  `json:"last_ns"`
}

// Session is a signed-in browser: its cookie holds the secret, the bucket
// its hash.
type Session struct {
	Hash      string `json:"hash"`
	User      string `json:"user"`
	CSRF      string `json:"csrf"`
	CreatedNS int64  `json:"created_ns"`
	ExpiresNS int64  `json:"expires_ns"`
}

const (
	BucketUsers    = "lem_platform_users"
	BucketSessions = "lem_platform_sessions"
	sessionCookie  = "lem_session"
	flowCookie     = "lem_signin"
	// SessionTTL is how long a session lasts (the bucket's max age too).
	SessionTTL = 7 * 24 * time.Hour
)

// openAuthState adds the users and sessions buckets to s.
func (s *State) openAuthState(ctx context.Context) error {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketUsers, Description: "lem platform: users", History: 5})
	if err != nil {
		return fmt.Errorf("opening bucket %s: %w", BucketUsers, err)
	}
	s.users = kv
	kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketSessions, Description: "lem platform: sessions by SHA-256 of the cookie", TTL: SessionTTL})
	if err != nil {
		return fmt.Errorf("opening bucket %s: %w", BucketSessions, err)
	}
	s.sessions = kv
	return nil
}

// SignIn records a user's sign-in (creating the user the first time, with
// the role the operator's lists give) and starts a session; it returns the
// cookie's secret.
func (s *State) SignIn(ctx context.Context, u User, admins, moderators []string) (string, Session, User, error) {
	key := kvKey(u.ID)
	prev, ok, err := get[User](ctx, s.users, key)
	if err != nil {
		return "", Session{}, User{}, err
	}
	now := time.Now().UnixNano()
	if ok {
		u.CreatedNS, u.Role = prev.CreatedNS, prev.Role
	} else {
		u.CreatedNS, u.Role = now, RoleUser
		if err := s.record(ctx, "user.created", u.ID, u.ID, u); err != nil {
			return "", Session{}, User{}, err
		}
	}
	// The operator's lists are authoritative at every sign-in.
	switch {
	case matchesUser(u, admins):
		u.Role = RoleAdmin
	case matchesUser(u, moderators):
		u.Role = RoleModerator
	case u.Role != RoleUser && ok && (prev.Role == RoleAdmin || prev.Role == RoleModerator):
		u.Role = RoleUser // removed from the lists
	}
	u.LastNS = now
	if err := put(ctx, s.users, key, u); err != nil {
		return "", Session{}, User{}, err
	}
	secret, err := randomSecret()
	if err != nil {
		return "", Session{}, User{}, err
	}
	csrf, err := randomSecret()
	if err != nil {
		return "", Session{}, User{}, err
	}
	ses := Session{Hash: hashSecret(secret), User: u.ID, CSRF: csrf, CreatedNS: now, ExpiresNS: now + int64(SessionTTL)}
	if err := s.record(ctx, "session.started", u.ID, u.ID, struct {
		User string `json:"user"`
		At   int64  `json:"at_ns"`
	}{u.ID, now}); err != nil {
		return "", Session{}, User{}, err
	}
	return secret, ses, u, put(ctx, s.sessions, ses.Hash, ses)
}

// matchesUser says whether u is named in list (by id, login or email).
func matchesUser(u User, list []string) bool {
	for _, x := range list {
		if x != "" && (x == u.ID || x == u.Provider+":"+u.Login || (u.Email != "" && strings.EqualFold(x, u.Email))) {
			return true
		}
	}
	return false
}

// SessionOf returns the session and user of a cookie secret.
func (s *State) SessionOf(ctx context.Context, secret string) (Session, User, error) {
	ses, ok, err := get[Session](ctx, s.sessions, hashSecret(secret))
	if err != nil {
		return Session{}, User{}, err
	}
	if !ok || time.Now().UnixNano() > ses.ExpiresNS {
		return Session{}, User{}, fmt.Errorf("%w: no session (signed out or expired)", ErrUnauthorized)
	}
	u, ok, err := get[User](ctx, s.users, kvKey(ses.User))
	if err != nil || !ok {
		return Session{}, User{}, fmt.Errorf("%w: the session's user is unknown", ErrUnauthorized)
	}
	return ses, u, nil
}

// SignOut ends the session of a cookie secret.
func (s *State) SignOut(ctx context.Context, secret string) error {
	return s.sessions.Delete(ctx, hashSecret(secret))
}

// Tokens returns user's tokens (all users' for "").
func (s *State) Tokens(ctx context.Context, user string) ([]Token, error) {
	all, err := list[Token](ctx, s.tokens)
	if err != nil {
		return nil, err
	}
	out := []Token{}
	for _, t := range all {
		if user == "" || t.User == user {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b Token) int { return cmp.Compare(b.CreatedNS, a.CreatedNS) })
	return out, nil
}

// Token returns the token with hash h.
func (s *State) Token(ctx context.Context, h string) (Token, bool, error) {
	return get[Token](ctx, s.tokens, h)
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// principal is who makes a request: a signed-in user (with the session's
// CSRF token) or an API token.
type principal struct {
	User    User
	Session *Session
	Token   *Token
}

// who authenticates r: an API token (Authorization: Bearer) or a session
// cookie.
func (s *Server) who(r *http.Request) (*principal, error) {
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, err := s.cfg.State.Authenticate(ctx, strings.TrimPrefix(h, "Bearer "), ScopeRead)
		if err != nil {
			return nil, err
		}
		u, _, _ := get[User](ctx, s.cfg.State.users, kvKey(tok.User))
		if u.ID == "" {
			u = User{ID: tok.User, Login: tok.User, Role: RoleUser}
			if slices.Contains(tok.Scopes, ScopeAdmin) {
				u.Role = RoleAdmin
			}
		}
		return &principal{User: u, Token: &tok}, nil
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, fmt.Errorf("%w: not signed in", ErrUnauthorized)
	}
	ses, u, err := s.cfg.State.SessionOf(ctx, c.Value)
	if err != nil {
		return nil, err
	}
	return &principal{User: u, Session: &ses}, nil
}

// checkCSRF refuses a state-changing request made with a session cookie
// unless it carries the session's CSRF token in X-CSRF-Token and comes
// from this origin. API tokens are not sent by browsers on their own and
// need no CSRF token.
func (s *Server) checkCSRF(r *http.Request, p *principal) error {
	if p.Session == nil {
		return nil
	}
	got := r.Header.Get("X-CSRF-Token")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.Session.CSRF)) != 1 {
		return errors.New("missing or wrong CSRF token (X-CSRF-Token)")
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return fmt.Errorf("request from another origin (%s)", o)
		}
	}
	return nil
}

// limiter is a fixed-window rate limit per key.
type limiter struct {
	mu     sync.Mutex
	n      int
	window time.Duration
	hits   map[string][]time.Time
}

func newLimiter(n int, window time.Duration) *limiter {
	return &limiter{n: n, window: window, hits: map[string][]time.Time{}}
}

func (l *limiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	ts := slices.DeleteFunc(l.hits[key], func(t time.Time) bool { return now.Sub(t) > l.window })
	if len(ts) >= l.n {
		l.hits[key] = ts
		return false
	}
	l.hits[key] = append(ts, now)
	return true
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// flowState is what a sign-in carries from the redirect to the callback,
// in a cookie signed with the server's key: the state and nonce it sent,
// the PKCE verifier and where to return.
type flowState struct {
	Provider string `json:"p"`
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Expires  int64  `json:"e"`
}

func (s *Server) sign(b []byte) string {
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(b) + "." + hex.EncodeToString(m.Sum(nil))
}

func (s *Server) unsign(v string) ([]byte, bool) {
	payload, mac, ok := strings.Cut(v, ".")
	if !ok {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, false
	}
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	want := hex.EncodeToString(m.Sum(nil))
	return b, hmac.Equal([]byte(mac), []byte(want))
}

func (s *Server) setFlow(w http.ResponseWriter, f flowState) {
	b, _ := json.Marshal(f)
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: s.sign(b), Path: "/auth/", HttpOnly: true,
		Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: 600})
}

func (s *Server) takeFlow(w http.ResponseWriter, r *http.Request) (flowState, error) {
	var f flowState
	c, err := r.Cookie(flowCookie)
	if err != nil {
		return f, errors.New("no sign-in in progress in this browser (cookie missing): start again")
	}
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: "", Path: "/auth/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookies})
	b, ok := s.unsign(c.Value)
	if !ok || json.Unmarshal(b, &f) != nil {
		return f, errors.New("the sign-in cookie was altered")
	}
	if time.Now().Unix() > f.Expires {
		return f, errors.New("the sign-in took longer than 10 minutes: start again")
	}
	return f, nil
}

// safeReturn keeps a return path on this site.
func safeReturn(p string) string {
	if p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.Contains(p, "\\") {
		return "/"
	}
	return p
}
