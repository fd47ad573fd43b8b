package platform

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/schemas"
)

// The platform's state is event-sourced like everything else: every
// change is an event on lem.v1.platform.<type> (in the event stream), and
// the current state is in JetStream key-value buckets, which the server
// reads at start and writes after each event.
const (
	SubjectPlatform = schemas.SubjectRoot + ".platform"
	BucketRuns      = "lem_platform_runs"
	BucketTokens    = "lem_platform_tokens"
	BucketUploads   = "lem_platform_uploads"
)

// Published is a run on the platform: its entry and verification report.
type Published struct {
	Entry  Entry   `json:"entry"`
	Report *Report `json:"report"`
	// Decisions are the moderators' verdicts on it, oldest first.
	Decisions []Decision `json:"decisions,omitempty"`
}

// Token is an API token as stored: only its hash.
type Token struct {
	Hash      string   `json:"hash"` // SHA-256 of the secret, hex
	Name      string   `json:"name"`
	User      string   `json:"user"`
	Scopes    []string `json:"scopes"` // upload, read, admin
	CreatedNS int64    `json:"created_ns"`
	ExpiresNS int64    `json:"expires_ns"` // 0: never
	Revoked   bool     `json:"revoked"`
}

// Upload is a submission's state.
type Upload struct {
	RunID  string  `json:"run_id"`
	Hash   string  `json:"hash"`
	User   string  `json:"user"`
	Signer string  `json:"signer,omitempty"` // NKey that signed the content hash
	State  string  `json:"state"`            // verified, refused
	Reason string  `json:"reason,omitempty"`
	Report *Report `json:"report,omitempty"`
	AtNS   int64   `json:"at_ns"`
	Job    string  `json:"job,omitempty"` // the job whose worker uploaded it
}

// State is the platform's JetStream state.
type State struct {
	js                    jetstream.JetStream
	runs, tokens, uploads jetstream.KeyValue
	users, sessions       jetstream.KeyValue
	proposals             jetstream.KeyValue    // boards that match no standard profile
	overviews             jetstream.ObjectStore // runs' power overviews (derived data, rebuilt when missing)
	details               jetstream.ObjectStore // runs' recomputed figures as the run page shows them (derived data, by lem version)
}

// OpenState creates (or opens) the platform's buckets. The event stream
// (bus.EnsureStreams) must exist: platform events are stored in it.
func OpenState(ctx context.Context, js jetstream.JetStream) (*State, error) {
	s := &State{js: js}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
		desc string
	}{
		{BucketRuns, &s.runs, "lem platform: published runs (entry + verification report)"},
		{BucketTokens, &s.tokens, "lem platform: API tokens by SHA-256 of the secret"},
		{BucketUploads, &s.uploads, "lem platform: submissions by run id"},
	} {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.name, Description: b.desc, History: 5})
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketProposals, Description: "lem platform: boards seen that match no standard profile", History: 5})
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", BucketProposals, err)
	}
	s.proposals = kv
	if err := s.openAuthState(ctx); err != nil {
		return nil, err
	}
	ob, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BucketOverviews,
		Description: "lem platform: each run's power at 1 s (min, max, sum, count), for the timeline's wide views"})
	if err != nil {
		return nil, fmt.Errorf("opening object store %s: %w", BucketOverviews, err)
	}
	s.overviews = ob
	if s.details, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BucketDetails,
		Description: "lem platform: each run's figures recomputed from its telemetry, as its page shows them, by the lem version that computed them"}); err != nil {
		return nil, fmt.Errorf("opening object store %s: %w", BucketDetails, err)
	}
	return s, nil
}

// BucketDetails is the object store of the runs' recomputed figures.
const BucketDetails = "lem_platform_details"

// SaveDetail keeps a run's recomputed figures (the run page's JSON) with
// the version of lem that computed them.
func (s *State) SaveDetail(ctx context.Context, runID, version string, b []byte) error {
	_, err := s.details.Put(ctx, jetstream.ObjectMeta{Name: kvKey(runID), Metadata: map[string]string{"lem_version": version}}, bytes.NewReader(b))
	return err
}

// LoadDetail returns a run's kept figures when the given version of lem
// computed them (another version recomputes: its analysis may differ).
func (s *State) LoadDetail(ctx context.Context, runID, version string) ([]byte, bool, error) {
	info, err := s.details.GetInfo(ctx, kvKey(runID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if info.Metadata["lem_version"] != version {
		return nil, false, nil
	}
	b, err := s.details.GetBytes(ctx, kvKey(runID))
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// BucketOverviews is the object store of the runs' power overviews.
const BucketOverviews = "lem_platform_overviews"

// SaveOverview keeps a run's power overview.
func (s *State) SaveOverview(ctx context.Context, runID string, ov *overview) error {
	_, err := s.overviews.PutBytes(ctx, kvKey(runID), ov.encode())
	return err
}

// LoadOverview returns a run's kept power overview.
func (s *State) LoadOverview(ctx context.Context, runID string) (*overview, bool, error) {
	b, err := s.overviews.GetBytes(ctx, kvKey(runID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	ov, err := decodeOverview(b)
	return ov, err == nil, err
}

// record publishes a platform event (schemas.PlatformEvent in the wire
// codec, so that ingest stores the history in platform_events) and waits
// for the stream's ack. v is the new state, which never holds a secret.
func (s *State) record(ctx context.Context, typ, subject, actor string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ev := schemas.PlatformEvent{TS: time.Now().UnixNano(), Type: typ, Subject: subject, Actor: actor, Payload: string(b)}
	if _, err := s.js.Publish(ctx, SubjectPlatform+"."+typ, ev.AppendWire(nil)); err != nil {
		return fmt.Errorf("recording %s: %w", typ, err)
	}
	return nil
}

var kvSafe = regexp.MustCompile(`^[-_=.a-zA-Z0-9]+$`)

// kvKey maps a run id to a key-value key (as is where it is a valid key).
func kvKey(id string) string {
	if kvSafe.MatchString(id) && !strings.HasPrefix(id, ".") && !strings.HasSuffix(id, ".") && !strings.Contains(id, "..") {
		return id
	}
	return "x" + hex.EncodeToString([]byte(id))
}

func put[T any](ctx context.Context, kv jetstream.KeyValue, key string, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key, b)
	return err
}

func get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, bool, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, false, nil
	}
	if err != nil {
		return v, false, err
	}
	return v, true, json.Unmarshal(e.Value(), &v)
}

// Publish records a run's publication and stores it.
func (s *State) Publish(ctx context.Context, p Published) error {
	if err := s.record(ctx, "run.published", p.Entry.RunID, "", p); err != nil {
		return err
	}
	return put(ctx, s.runs, kvKey(p.Entry.RunID), p)
}

// Run returns a published run.
func (s *State) Run(ctx context.Context, runID string) (Published, bool, error) {
	return get[Published](ctx, s.runs, kvKey(runID))
}

// Runs returns every published run.
func (s *State) Runs(ctx context.Context) ([]Published, error) { return list[Published](ctx, s.runs) }

// list returns every value of a bucket.
func list[T any](ctx context.Context, kv jetstream.KeyValue) ([]T, error) {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []T
	for k := range keys.Keys() {
		v, ok, err := get[T](ctx, kv, k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if ok {
			out = append(out, v)
		}
	}
	return out, nil
}

// SetUpload records a submission's new state.
func (s *State) SetUpload(ctx context.Context, u Upload) error {
	if err := s.record(ctx, "upload."+u.State, u.RunID, u.User, u); err != nil {
		return err
	}
	return put(ctx, s.uploads, kvKey(u.RunID), u)
}

// Uploads returns every submission's latest state.
func (s *State) Uploads(ctx context.Context) ([]Upload, error) { return list[Upload](ctx, s.uploads) }

// Upload returns a run's submission.
func (s *State) Upload(ctx context.Context, runID string) (Upload, bool, error) {
	return get[Upload](ctx, s.uploads, kvKey(runID))
}

// Scopes of API tokens.
const (
	ScopeUpload = "upload"
	ScopeRead   = "read"
	ScopeAdmin  = "admin"
	// ScopeWorker lets a GPU worker upload runs for the jobs it ran (in
	// their submitters' names).
	ScopeWorker = "worker"
)

var secretEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// CreateToken makes a token for user with scopes; the secret is returned
// once and only its hash is kept.
func (s *State) CreateToken(ctx context.Context, user, name string, scopes []string, ttl time.Duration) (string, Token, error) {
	for _, sc := range scopes {
		if !slices.Contains([]string{ScopeUpload, ScopeRead, ScopeAdmin, ScopeWorker}, sc) {
			return "", Token{}, fmt.Errorf("unknown token scope %q (upload, read, admin, worker)", sc)
		}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", Token{}, err
	}
	secret := "lem_" + strings.ToLower(secretEnc.EncodeToString(raw))
	t := Token{Hash: hashSecret(secret), Name: name, User: user, Scopes: scopes, CreatedNS: time.Now().UnixNano()}
	if ttl > 0 {
		t.ExpiresNS = time.Now().Add(ttl).UnixNano()
	}
	if err := s.record(ctx, "token.created", t.Hash, user, t); err != nil {
		return "", Token{}, err
	}
	return secret, t, put(ctx, s.tokens, t.Hash, t)
}

// RevokeToken revokes the token with hash h.
func (s *State) RevokeToken(ctx context.Context, h string) error {
	t, ok, err := get[Token](ctx, s.tokens, h)
	if err != nil || !ok {
		return fmt.Errorf("token %s: not found (%v)", h, err)
	}
	t.Revoked = true
	if err := s.record(ctx, "token.revoked", h, t.User, t); err != nil {
		return err
	}
	return put(ctx, s.tokens, h, t)
}

// ErrUnauthorized is a missing, unknown, expired or revoked token, or one
// without the scope needed.
var ErrUnauthorized = errors.New("unauthorized")

// Authenticate returns the token of secret if it is valid and has scope.
func (s *State) Authenticate(ctx context.Context, secret, scope string) (Token, error) {
	if !strings.HasPrefix(secret, "lem_") {
		return Token{}, fmt.Errorf("%w: not a lem API token", ErrUnauthorized)
	}
	t, ok, err := get[Token](ctx, s.tokens, hashSecret(secret))
	if err != nil {
		return Token{}, err
	}
	switch {
	case !ok:
		return Token{}, fmt.Errorf("%w: unknown token", ErrUnauthorized)
	case t.Revoked:
		return Token{}, fmt.Errorf("%w: token revoked", ErrUnauthorized)
	case t.ExpiresNS != 0 && time.Now().UnixNano() > t.ExpiresNS:
		return Token{}, fmt.Errorf("%w: token expired", ErrUnauthorized)
	case !slices.Contains(t.Scopes, scope) && !slices.Contains(t.Scopes, ScopeAdmin):
		return Token{}, fmt.Errorf("%w: token lacks the %s scope", ErrUnauthorized, scope)
	}
	return t, nil
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
