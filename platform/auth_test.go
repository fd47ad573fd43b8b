package platform

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/rs/zerolog"
)

// startOIDC runs a real OpenID Provider (testenv.OIDC).
func startOIDC(t testing.TB, callback string) string { return testenv.OIDC(t, callback) }

// startGitHub serves GitHub's documented OAuth web flow and user API
// (/login/oauth/authorize, /login/oauth/access_token with PKCE, /user)
// for one user who approves at once; it checks the client, the redirect
// URI, the code and the verifier as GitHub does.
func startGitHub(t testing.TB, clientID, secret string, id int64, login string) string {
	t.Helper()
	var mu sync.Mutex
	codes := map[string][2]string{} // code → challenge, redirect
	tokens := map[string]bool{}
	m := http.NewServeMux()
	m.HandleFunc("GET /login/oauth/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != clientID || q.Get("code_challenge_method") != "S256" {
			http.Error(w, "bad client or no PKCE", 400)
			return
		}
		code := fmt.Sprintf("code-%d", len(codes)+1)
		mu.Lock()
		codes[code] = [2]string{q.Get("code_challenge"), q.Get("redirect_uri")}
		mu.Unlock()
		u, _ := url.Parse(q.Get("redirect_uri"))
		v := u.Query()
		v.Set("code", code)
		v.Set("state", q.Get("state"))
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	})
	m.HandleFunc("POST /login/oauth/access_token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		id, sec, ok := r.BasicAuth()
		if !ok {
			id, sec = r.Form.Get("client_id"), r.Form.Get("client_secret")
		}
		mu.Lock()
		c, known := codes[r.Form.Get("code")]
		delete(codes, r.Form.Get("code"))
		mu.Unlock()
		sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
		if id != clientID || sec != secret || !known || base64.RawURLEncoding.EncodeToString(sum[:]) != c[0] || r.Form.Get("redirect_uri") != c[1] {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"error":"bad_verification_code"}`))
			return
		}
		tok := fmt.Sprintf("gho_%x", sum[:8])
		mu.Lock()
		tokens[tok] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"access_token": tok, "token_type": "bearer", "scope": "read:user,user:email"})
	})
	m.HandleFunc("GET /user", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		mu.Unlock()
		if !ok {
			http.Error(w, `{"message":"Bad credentials"}`, 401)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"id": id, "login": login, "name": "The " + login})
	})
	hs := httptest.NewServer(m)
	t.Cleanup(hs.Close)
	return hs.URL
}

// signIn goes through a provider's sign-in as a browser would (cookies,
// redirects, the provider's login form) and returns the client.
func signIn(t *testing.T, base, provider, user string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(base + "/auth/login/" + provider + "?return=/tokens")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if m := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(body); m != nil {
		// The provider's login page: post the credentials.
		form := url.Values{"id": {string(m[1])}, "username": {user}, "password": {"verysecure"}}
		resp, err = c.PostForm(resp.Request.URL.ResolveReference(&url.URL{Path: "/login/username"}).String(), form)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if resp.Request.URL.Path != "/tokens" || resp.StatusCode != 200 {
		t.Fatalf("sign-in ended at %s (%d): %s", resp.Request.URL, resp.StatusCode, body)
	}
	return c
}

type me struct {
	User User
	CSRF string
}

func TestSignInTokensCSRF(t *testing.T) {
	var logs bytes.Buffer
	p := newTestPlatform(t)
	p.srv.cfg.Log = zerolog.New(&logs)
	issuer := startOIDC(t, p.http.URL+"/auth/callback/oidc")
	ctx := context.Background()
	oidcP, err := NewOIDC(ctx, OIDCConfig{ID: "oidc", Name: "Lab login", Issuer: issuer, ClientID: "lem", ClientSecret: "lem-secret",
		RedirectURL: p.http.URL + "/auth/callback/oidc"})
	if err != nil {
		t.Fatal(err)
	}
	gh := startGitHub(t, "gh-client", "gh-secret", 583231, "octocat")
	p.srv.cfg.Providers = []Provider{oidcP, NewGitHub(GitHubConfig{ClientID: "gh-client", ClientSecret: "gh-secret",
		RedirectURL: p.http.URL + "/auth/callback/github", WebURL: gh, APIURL: gh})}
	p.srv.cfg.Admins = []string{"github:octocat"}

	var providers []map[string]string
	getJSON(t, p.http.URL+"/auth/providers", &providers)
	if len(providers) != 2 || providers[0]["name"] != "Lab login" {
		t.Fatalf("providers: %v", providers)
	}
	alice := signIn(t, p.http.URL, "oidc", "test-user@127.0.0.1")
	var am me
	getWith(t, alice, p.http.URL+"/api/me", &am, 200)
	if am.User.Email != "test-user@zitadel.ch" || am.User.Role != RoleUser || !strings.HasPrefix(am.User.ID, "oidc:") || am.CSRF == "" {
		t.Fatalf("me: %+v", am)
	}
	// A token: refused without the CSRF token and from another origin.
	body := `{"name":"lab box","scopes":["upload"],"expires_days":30}`
	if code := sendWith(t, alice, "POST", p.http.URL+"/api/tokens", body, nil, nil); code != 403 {
		t.Fatalf("no CSRF token: %d", code)
	}
	if code := sendWith(t, alice, "POST", p.http.URL+"/api/tokens", body, map[string]string{"X-CSRF-Token": am.CSRF, "Origin": "https://evil.example"}, nil); code != 403 {
		t.Fatalf("another origin: %d", code)
	}
	if code := sendWith(t, alice, "POST", p.http.URL+"/api/tokens", `{"name":"x","scopes":["admin"]}`, map[string]string{"X-CSRF-Token": am.CSRF}, nil); code != 403 {
		t.Fatalf("an admin token for a user: %d", code)
	}
	var made struct {
		Secret string
		Token  Token
	}
	if code := sendWith(t, alice, "POST", p.http.URL+"/api/tokens", body, map[string]string{"X-CSRF-Token": am.CSRF}, &made); code != 201 || made.Secret == "" {
		t.Fatalf("token: %d %+v", code, made)
	}
	if made.Token.User != am.User.ID || made.Token.ExpiresNS == 0 {
		t.Fatalf("token: %+v", made.Token)
	}
	// It authenticates uploads as alice.
	if tok, err := p.state.Authenticate(ctx, made.Secret, ScopeUpload); err != nil || tok.User != am.User.ID {
		t.Fatalf("the new token: %v %+v", err, tok)
	}
	var listed []Token
	getWith(t, alice, p.http.URL+"/api/tokens", &listed, 200)
	if len(listed) != 1 || listed[0].Hash != made.Token.Hash {
		t.Fatalf("alice's tokens: %+v", listed)
	}

	// Bob (GitHub, an admin by the operator's list) cannot revoke alice's
	// token through her session, and another user's session cannot either.
	bob := signIn(t, p.http.URL, "github", "")
	var bm me
	getWith(t, bob, p.http.URL+"/api/me", &bm, 200)
	if bm.User.ID != "github:583231" || bm.User.Role != RoleAdmin || bm.User.Login != "octocat" {
		t.Fatalf("bob: %+v", bm)
	}
	carol := signIn(t, p.http.URL, "oidc", "test-user2")
	var cm me
	getWith(t, carol, p.http.URL+"/api/me", &cm, 200)
	if code := sendWith(t, carol, "DELETE", p.http.URL+"/api/tokens/"+made.Token.Hash, "", map[string]string{"X-CSRF-Token": cm.CSRF}, nil); code != 404 {
		t.Fatalf("carol revoking alice's token: %d", code)
	}
	if code := sendWith(t, carol, "DELETE", p.http.URL+"/api/tokens/"+made.Token.Hash, "", map[string]string{"X-CSRF-Token": am.CSRF}, nil); code != 403 {
		t.Fatalf("carol with alice's CSRF token: %d", code)
	}
	if code := sendWith(t, alice, "DELETE", p.http.URL+"/api/tokens/"+made.Token.Hash, "", map[string]string{"X-CSRF-Token": am.CSRF}, nil); code != 200 {
		t.Fatalf("alice revoking her token: %d", code)
	}
	if _, err := p.state.Authenticate(ctx, made.Secret, ScopeUpload); err == nil {
		t.Fatal("a revoked token still authenticates")
	}
	// Sign out: the session is gone.
	if code := sendWith(t, alice, "POST", p.http.URL+"/auth/logout", "", map[string]string{"X-CSRF-Token": am.CSRF}, nil); code != 200 {
		t.Fatalf("sign out: %d", code)
	}
	var gone struct{ User *User }
	getWith(t, alice, p.http.URL+"/api/me", &gone, 200) // the cookie was cleared: anonymous
	if gone.User != nil {
		t.Fatalf("after signing out: %+v", gone.User)
	}
	stale, _ := http.NewRequest("GET", p.http.URL+"/api/me", nil)
	stale.AddCookie(&http.Cookie{Name: sessionCookie, Value: "a-session-that-ended"})
	if resp, err := http.DefaultClient.Do(stale); err != nil || resp.StatusCode != 401 {
		t.Fatalf("a cookie of no session: %v %v", err, resp.StatusCode)
	}

	// A callback without this browser's sign-in, or with another state, is refused.
	fresh := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := fresh.Get(p.http.URL + "/auth/callback/oidc?code=x&state=y")
	if resp.StatusCode != 400 {
		t.Fatalf("a callback with no sign-in: %d", resp.StatusCode)
	}
	jar, _ := cookiejar.New(nil)
	fresh.Jar = jar
	resp, _ = fresh.Get(p.http.URL + "/auth/login/oidc")
	if resp.StatusCode != 302 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	resp, _ = fresh.Get(p.http.URL + "/auth/callback/oidc?code=x&state=forged")
	if resp.StatusCode != 400 {
		t.Fatalf("a forged state: %d", resp.StatusCode)
	}
	// Secrets never reach the log.
	if strings.Contains(logs.String(), made.Secret) || strings.Contains(logs.String(), am.CSRF) {
		t.Fatal("a token secret or CSRF token was logged")
	}
	if !strings.Contains(logs.String(), "signed in") {
		t.Fatalf("no sign-in logged: %s", logs.String())
	}
}

func TestSignInRateLimit(t *testing.T) {
	p := newTestPlatform(t)
	gh := startGitHub(t, "c", "s", 1, "x")
	p.srv.cfg.Providers = []Provider{NewGitHub(GitHubConfig{ClientID: "c", ClientSecret: "s", RedirectURL: p.http.URL + "/auth/callback/github", WebURL: gh, APIURL: gh})}
	p.srv.signins = newLimiter(3, 60e9)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var codes []int
	for range 4 {
		resp, err := c.Get(p.http.URL + "/auth/login/github")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if fmt.Sprint(codes) != "[302 302 302 429]" {
		t.Fatalf("codes %v", codes)
	}
}

func getWith(t *testing.T, c *http.Client, url string, v any, want int) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	if want == 200 {
		json.NewDecoder(resp.Body).Decode(v)
	}
}

func sendWith(t *testing.T, c *http.Client, method, url, body string, hdr map[string]string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, x := range hdr {
		req.Header.Set(k, x)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}
