package platform

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Provider is a way to sign in: an OpenID Connect provider or GitHub.
type Provider interface {
	ID() string   // in URLs: /auth/login/{id}
	Name() string // on the button
	// AuthURL is where the browser goes to sign in.
	AuthURL(f flowState) string
	// Identify completes a sign-in from the provider's callback request.
	Identify(ctx context.Context, r *http.Request, f flowState) (User, error)
}

// OIDCConfig configures an OpenID Connect provider.
type OIDCConfig struct {
	ID, Name     string // default "oidc", the issuer's host
	Issuer       string
	ClientID     string
	ClientSecret string
	RedirectURL  string // <public URL>/auth/callback/<id>
}

type oidcProvider struct {
	c        OIDCConfig
	p        *oidc.Provider
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	issuerID string
}

// NewOIDC discovers the provider (its /.well-known/openid-configuration).
func NewOIDC(ctx context.Context, c OIDCConfig) (Provider, error) {
	p, err := oidc.NewProvider(ctx, c.Issuer)
	if err != nil {
		return nil, fmt.Errorf("OpenID Connect provider %s: %w", c.Issuer, err)
	}
	if c.ID == "" {
		c.ID = "oidc"
	}
	if c.Name == "" {
		c.Name = c.Issuer
	}
	h := sha256.Sum256([]byte(c.Issuer))
	return &oidcProvider{c: c, p: p, verifier: p.Verifier(&oidc.Config{ClientID: c.ClientID}), issuerID: hex.EncodeToString(h[:4]),
		oauth: oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: c.RedirectURL,
			Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}}, nil
}

func (p *oidcProvider) ID() string   { return p.c.ID }
func (p *oidcProvider) Name() string { return p.c.Name }

func (p *oidcProvider) AuthURL(f flowState) string {
	return p.oauth.AuthCodeURL(f.State, oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier))
}

func (p *oidcProvider) Identify(ctx context.Context, r *http.Request, f flowState) (User, error) {
	tok, err := p.oauth.Exchange(ctx, r.URL.Query().Get("code"), oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return User{}, fmt.Errorf("exchanging the code: %w", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok {
		return User{}, errors.New("the provider returned no ID token")
	}
	id, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		return User{}, fmt.Errorf("verifying the ID token: %w", err)
	}
	if id.Nonce != f.Nonce {
		return User{}, errors.New("the ID token's nonce is not this sign-in's")
	}
	var claims struct {
		Email             string `json:"email"`
		Name              string `json:"name"`
		PreferredUsername string `json:"preferred_username"`
	}
	if err := id.Claims(&claims); err != nil {
		return User{}, err
	}
	if claims.Email == "" && claims.Name == "" && claims.PreferredUsername == "" {
		// Providers that keep the profile out of the ID token give it at
		// the userinfo endpoint, for the same subject.
		ui, err := p.p.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return User{}, fmt.Errorf("reading the user's profile: %w", err)
		}
		if ui.Subject != id.Subject {
			return User{}, errors.New("the userinfo endpoint answered for another subject")
		}
		if err := ui.Claims(&claims); err != nil {
			return User{}, err
		}
	}
	login := claims.PreferredUsername
	if login == "" {
		login = claims.Email
	}
	if login == "" {
		login = id.Subject
	}
	return User{ID: "oidc:" + p.issuerID + ":" + id.Subject, Login: login, Name: orDefault(claims.Name, login), Email: claims.Email, Provider: p.c.ID}, nil
}

// GitHubConfig configures sign-in with GitHub (or GitHub Enterprise, or a
// server speaking its OAuth endpoints).
type GitHubConfig struct {
	ClientID, ClientSecret string
	RedirectURL            string
	WebURL                 string // https://github.com
	APIURL                 string // https://api.github.com
}

type githubProvider struct {
	c     GitHubConfig
	oauth oauth2.Config
}

// NewGitHub returns the GitHub provider.
func NewGitHub(c GitHubConfig) Provider {
	if c.WebURL == "" {
		c.WebURL = "https://github.com"
	}
	if c.APIURL == "" {
		c.APIURL = "https://api.github.com"
	}
	web := strings.TrimSuffix(c.WebURL, "/")
	return &githubProvider{c: c, oauth: oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: c.RedirectURL,
		Endpoint: oauth2.Endpoint{AuthURL: web + "/login/oauth/authorize", TokenURL: web + "/login/oauth/access_token"},
		Scopes:   []string{"read:user", "user:email"}}}
}

func (p *githubProvider) ID() string   { return "github" }
func (p *githubProvider) Name() string { return "GitHub" }

func (p *githubProvider) AuthURL(f flowState) string {
	return p.oauth.AuthCodeURL(f.State, oauth2.S256ChallengeOption(f.Verifier))
}

func (p *githubProvider) Identify(ctx context.Context, r *http.Request, f flowState) (User, error) {
	tok, err := p.oauth.Exchange(ctx, r.URL.Query().Get("code"), oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return User{}, fmt.Errorf("exchanging the code: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.c.APIURL, "/")+"/user", nil)
	if err != nil {
		return User{}, err
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/vnd.github+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return User{}, fmt.Errorf("reading the GitHub user: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return User{}, fmt.Errorf("reading the GitHub user: %s", resp.Status)
	}
	var gu struct {
		ID    int64  `json:"id"`
		Login string `json:"login"`
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	if err := json.Unmarshal(body, &gu); err != nil || gu.ID == 0 || gu.Login == "" {
		return User{}, fmt.Errorf("the GitHub user answer lacks id or login: %v", err)
	}
	return User{ID: fmt.Sprintf("github:%d", gu.ID), Login: gu.Login, Name: orDefault(gu.Name, gu.Login), Email: gu.Email, Provider: "github"}, nil
}
