package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// call makes an API request with a bearer token and decodes the answer.
func (p *testPlatform) call(t *testing.T, method, path, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.http.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// user makes a user with a role and an API token (read and upload) for it.
func (p *testPlatform) user(t *testing.T, id, role string) string {
	t.Helper()
	if err := put(context.Background(), p.state.users, kvKey(id), User{ID: id, Login: id, Role: role}); err != nil {
		t.Fatal(err)
	}
	return p.token(t, id, ScopeUpload, ScopeRead)
}

// On a moderated platform a verified upload waits for a moderator: off the
// leaderboard and hidden from others until approved; decisions need
// reasons where the submitter must learn why, are events (the audit log
// reads them back from the stream), and survive a restart.
func TestModeration(t *testing.T) {
	data, _, _, run := h200Bundle(t)
	p := newTestPlatformTB(t, func(c *Config, _ *nats.Conn, _ jetstream.JetStream) { c.Moderate = true })
	alice, bob, mod := p.user(t, "alice", RoleUser), p.user(t, "bob", RoleUser), p.user(t, "mod", RoleModerator)

	code, up := p.upload(t, alice, data)
	if code != http.StatusCreated || up["state"] != "verified" || !strings.Contains(up["reason"].(string), "awaiting a moderator") {
		t.Fatalf("upload: %d %v", code, up)
	}
	var lb Result
	if p.call(t, "GET", "/api/leaderboard?workload=*", "", nil, &lb); lb.Total != 0 {
		t.Fatalf("a pending run is on the leaderboard: %+v", lb.Rows)
	}
	for who, want := range map[string]int{"": 404, bob: 404, alice: 200, mod: 200} {
		var page map[string]any
		if got := p.call(t, "GET", "/api/runs/"+run, who, nil, &page); got != want {
			t.Errorf("run page of a pending run for %q: %d, want %d", who, got, want)
		}
		// (the timeline may answer 400 until ingest has stored the events;
		// what matters is whether it is hidden)
		if got := p.call(t, "GET", "/api/runs/"+run+"/timeline?points=10", who, nil, &page); (got == 404) != (want == 404) {
			t.Errorf("timeline of a pending run for %q: %d, want %d", who, got, want)
		}
	}
	var queue struct {
		Moderated bool
		Queue     []Published
	}
	if code := p.call(t, "GET", "/api/moderation", bob, nil, &queue); code != http.StatusForbidden {
		t.Errorf("a user read the moderation queue: %d", code)
	}
	if code := p.call(t, "GET", "/api/moderation", "", nil, &queue); code != http.StatusUnauthorized {
		t.Errorf("anonymous moderation queue: %d", code)
	}
	if p.call(t, "GET", "/api/moderation", mod, nil, &queue); !queue.Moderated || len(queue.Queue) != 1 ||
		queue.Queue[0].Entry.Moderation != ModerationPending || queue.Queue[0].Report == nil || !queue.Queue[0].Report.Passed() {
		t.Fatalf("queue: %+v", queue)
	}
	var e map[string]any
	for _, c := range []struct {
		who  string
		body map[string]string
		code int
		says string
	}{
		{bob, map[string]string{"decision": "approved"}, 403, "not a moderator"},
		{mod, map[string]string{"decision": "rejected"}, 400, "needs a reason"},
		{mod, map[string]string{"decision": "maybe"}, 400, "want approved"},
		{mod, map[string]string{"decision": "changes_requested", "reason": "state the server version"}, 200, ""},
	} {
		e = nil
		if got := p.call(t, "POST", "/api/moderation/"+run, c.who, c.body, &e); got != c.code || (c.says != "" && !strings.Contains(e["error"].(string), c.says)) {
			t.Errorf("decision %v by %s: %d %v, want %d …%s…", c.body, c.who, got, e, c.code, c.says)
		}
	}
	if p.call(t, "GET", "/api/leaderboard?workload=*", "", nil, &lb); lb.Total != 0 {
		t.Fatal("a run sent back for changes is on the leaderboard")
	}
	if code := p.call(t, "POST", "/api/moderation/"+run, mod, map[string]string{"decision": "approved"}, &e); code != 200 {
		t.Fatalf("approve: %d %v", code, e)
	}
	if code := p.call(t, "POST", "/api/moderation/"+run, mod, map[string]string{"decision": "approved"}, &e); code != http.StatusConflict {
		t.Errorf("approving a public run again: %d %v", code, e)
	}
	if p.call(t, "GET", "/api/leaderboard?workload=*", "", nil, &lb); lb.Total != 1 || lb.Rows[0].Moderation != ModerationApproved {
		t.Fatalf("approved run not on the leaderboard: %+v", lb)
	}
	// Everyone sees the approved page; only the submitter and moderators
	// see the decisions and their reasons.
	for who, n := range map[string]int{"": 0, bob: 0, alice: 2, mod: 2} {
		var page struct{ Decisions []Decision }
		if code := p.call(t, "GET", "/api/runs/"+run, who, nil, &page); code != 200 || len(page.Decisions) != n {
			t.Errorf("approved run page for %q: %d, %d decisions, want %d", who, code, len(page.Decisions), n)
		}
	}
	var log []Decision
	if code := p.call(t, "GET", "/api/moderation/log", mod, nil, &log); code != 200 || len(log) != 2 ||
		log[0].Decision != ModerationChanges || log[0].Reason != "state the server version" || log[1].Decision != ModerationApproved || log[1].Moderator != "mod" {
		t.Errorf("audit log: %d %+v", code, log)
	}
	var prof UserPage
	if code := p.call(t, "GET", "/api/users/alice", "", nil, &prof); code != 200 || prof.Verified != 1 || prof.Public != 1 || len(prof.Submissions) != 1 {
		t.Errorf("alice's profile: %d %+v", code, prof)
	}
	if code := p.call(t, "GET", "/api/users/nobody", "", nil, &prof); code != 404 {
		t.Errorf("unknown user's profile: %d", code)
	}

	// A second run, rejected: off the board, final; both survive a restart.
	dir := testenv.Untar(t, filepath.Join("..", "docs", "validation", "h200-lora", "store.tgz"))
	lora := store.Parquet(filepath.Join(dir, "lora", "store"))
	ids, err := lora.RunIDs(context.Background())
	if err != nil || len(ids) == 0 {
		t.Fatal(err)
	}
	var lb2 bytes.Buffer
	if _, _, err := WriteBundle(context.Background(), lora, ids[0], "test", &lb2); err != nil {
		t.Fatal(err)
	}
	if code, out := p.upload(t, bob, lb2.Bytes()); code != 201 {
		t.Fatalf("second upload: %d %v", code, out)
	}
	if code := p.call(t, "POST", "/api/moderation/"+ids[0], mod, map[string]string{"decision": "rejected", "reason": "power limit not stated"}, &e); code != 200 {
		t.Fatalf("reject: %d %v", code, e)
	}
	if code := p.call(t, "POST", "/api/moderation/"+ids[0], mod, map[string]string{"decision": "approved"}, &e); code != http.StatusConflict || !strings.Contains(e["error"].(string), "final") {
		t.Errorf("approving a rejected run: %d %v", code, e)
	}
	restarted, err := New(context.Background(), p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(restarted.Handler())
	defer hs.Close()
	p2 := &testPlatform{srv: restarted, http: hs, state: p.state, store: p.store, cfg: p.cfg}
	if p2.call(t, "GET", "/api/leaderboard?workload=*", "", nil, &lb); lb.Total != 1 || lb.Rows[0].RunID != run {
		t.Errorf("after a restart the leaderboard has %+v, want only the approved run", lb.Rows)
	}
	if code := p2.call(t, "GET", "/api/runs/"+ids[0], "", nil, &e); code != 404 {
		t.Errorf("a rejected run's page after a restart: %d", code)
	}
}
