package platform

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func withNotifier(c NotifyConfig) platformOption {
	return func(cfg *Config, nc *nats.Conn, js jetstream.JetStream) {
		n, err := OpenNotifier(context.Background(), js, cfg.State, c)
		if err != nil {
			panic(err)
		}
		cfg.Notifier = n
	}
}

// startNotifier runs the platform's notifier and waits until its consumer
// of the platform's events exists (it takes new events only).
func startNotifier(t *testing.T, ctx context.Context, p *testPlatform) {
	t.Helper()
	n := p.srv.cfg.Notifier
	go n.Run(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		name, err := n.js.StreamNameBySubject(ctx, SubjectPlatform+".x")
		if err == nil {
			if _, err = n.js.Consumer(ctx, name, notifierConsumer); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the notifier's consumer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiver is a webhook endpoint that answers the first fail requests 500.
type receiver struct {
	mu   sync.Mutex
	fail int
	got  []*http.Request
	body [][]byte
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got, rc.body = append(rc.got, r), append(rc.body, b)
	if len(rc.got) <= rc.fail {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) count() int { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.got) }

// Webhooks: a job's end reaches its submitter's endpoint, signed with the
// hook's secret, retried with backoff through failures and logged attempt
// by attempt; an endpoint that keeps failing is given up after the last
// attempt, and says so; nobody else hears of it; the secret is shown once.
func TestWebhooks(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}),
		withNotifier(NotifyConfig{Memory: true, AllowPrivate: true, Backoff: 50 * time.Millisecond, MaxAttempts: 4, PublicURL: "https://lem.example"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startNotifier(t, ctx, p)
	alice, bob := p.user(t, "alice", RoleUser), p.user(t, "bob", RoleUser)
	flaky, broken, bobs := &receiver{fail: 2}, &receiver{fail: 1000}, &receiver{}
	var hooks []Webhook
	for _, c := range []struct {
		tok string
		rc  *receiver
	}{{alice, flaky}, {alice, broken}, {bob, bobs}} {
		var h Webhook
		if code := p.call(t, "POST", "/api/notifications/webhooks", c.tok, map[string]string{"url": newHTTPServer(t, c.rc) + "/hook"}, &h); code != 201 || !strings.HasPrefix(h.Secret, "whsec_") {
			t.Fatalf("webhook: %d %+v", code, h)
		}
		hooks = append(hooks, h)
	}
	var e map[string]any
	if code := p.call(t, "POST", "/api/notifications/webhooks", alice, map[string]string{"url": "ftp://x"}, &e); code != 400 {
		t.Errorf("an ftp webhook: %d", code)
	}
	var subs struct{ Webhooks []Webhook }
	if p.call(t, "GET", "/api/notifications", alice, nil, &subs); len(subs.Webhooks) != 2 || subs.Webhooks[0].Secret != "" {
		t.Errorf("alice's webhooks: %+v (secrets are shown once)", subs.Webhooks)
	}
	var job Job
	p.call(t, "POST", "/api/jobs", alice, map[string]string{"profile": "sim", "experiment": simJob}, &job)
	p.call(t, "POST", "/api/jobs/"+job.ID+"/cancel", alice, nil, &job)
	deadline := time.Now().Add(20 * time.Second)
	for flaky.count() < 3 || broken.count() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries: flaky %d (want 3), broken %d (want 4)", flaky.count(), broken.count())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a fifth try would come now
	if broken.count() != 4 || flaky.count() != 3 || bobs.count() != 0 {
		t.Errorf("tries: broken %d (4 attempts), flaky %d, bob's %d (not his job)", broken.count(), flaky.count(), bobs.count())
	}
	r, body := flaky.got[2], flaky.body[2]
	var no Notification
	json.Unmarshal(body, &no)
	if r.Header.Get("X-Lem-Signature") != SignWebhook(hooks[0].Secret, body) || r.Header.Get("X-Lem-Event") != "job.canceled" ||
		no.User != "alice" || no.Link != "https://lem.example/jobs/"+job.ID || !strings.Contains(no.Summary, "canceled") ||
		r.Header.Get("X-Lem-Delivery") != flaky.got[0].Header.Get("X-Lem-Delivery") {
		t.Errorf("delivery: %v\n%s", r.Header, body)
	}
	var log []Attempt
	if p.call(t, "GET", "/api/notifications/deliveries/"+hooks[0].ID, alice, nil, &log); len(log) != 3 || log[0].OK || log[0].Status != 500 || !log[2].OK || log[2].Attempt != 3 {
		t.Errorf("flaky endpoint's log: %+v", log)
	}
	if p.call(t, "GET", "/api/notifications/deliveries/"+hooks[1].ID, alice, nil, &log); len(log) != 4 || !log[3].GaveUp {
		t.Errorf("broken endpoint's log: %+v", log)
	}
	if code := p.call(t, "GET", "/api/notifications/deliveries/"+hooks[0].ID, bob, nil, &e); code != 404 {
		t.Errorf("bob reads alice's log: %d", code)
	}
	if code := p.call(t, "DELETE", "/api/notifications/webhooks/"+hooks[1].ID, alice, nil, &e); code != 200 {
		t.Errorf("delete: %d", code)
	}
}

// Without -webhook-allow-private a webhook to a loopback address is not
// sent, and the log says why.
func TestWebhookRefusesPrivateAddresses(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}), withNotifier(NotifyConfig{Memory: true, Backoff: 10 * time.Millisecond, MaxAttempts: 1}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startNotifier(t, ctx, p)
	alice := p.user(t, "alice", RoleUser)
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	var h Webhook
	p.call(t, "POST", "/api/notifications/webhooks", alice, map[string]string{"url": srv.URL}, &h)
	var job Job
	p.call(t, "POST", "/api/jobs", alice, map[string]string{"profile": "sim", "experiment": simJob}, &job)
	p.call(t, "POST", "/api/jobs/"+job.ID+"/cancel", alice, nil, &job)
	deadline := time.Now().Add(10 * time.Second)
	var log []Attempt
	for len(log) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		p.call(t, "GET", "/api/notifications/deliveries/"+h.ID, alice, nil, &log)
	}
	if len(log) != 1 || log[0].OK || !strings.Contains(log[0].Error, "loopback") || rc.count() != 0 {
		t.Errorf("log %+v, %d requests reached the loopback server", log, rc.count())
	}
}

// E-mail: a moderator's decision reaches the submitter through a real SMTP
// server with STARTTLS (mailpit), and the server's API shows what arrived.
func TestEmailNotification(t *testing.T) {
	mail := testenv.Mailpit(t)
	data, _, _, run := h200Bundle(t)
	p := newTestPlatformTB(t, func(c *Config, _ *nats.Conn, _ jetstream.JetStream) { c.Moderate = true },
		withNotifier(NotifyConfig{Memory: true, Backoff: 50 * time.Millisecond, MaxAttempts: 3, PublicURL: "https://lem.example",
			SMTP: SMTPConfig{Addr: mail.SMTP, From: "lem@lem.example", User: "lem", Password: "secret", CAFile: mail.CAFile}}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startNotifier(t, ctx, p)
	if err := put(ctx, p.state.users, kvKey("alice"), User{ID: "alice", Login: "alice", Email: "alice@lab.example", Role: RoleUser}); err != nil {
		t.Fatal(err)
	}
	alice := p.token(t, "alice", ScopeUpload, ScopeRead)
	mod := p.user(t, "mod", RoleModerator)
	var e map[string]any
	if code := p.call(t, "PUT", "/api/notifications/email", alice, map[string]bool{"enabled": true}, &e); code != 200 || e["email"] != "alice@lab.example" {
		t.Fatalf("e-mail on: %d %v", code, e)
	}
	if code, out := p.upload(t, alice, data); code != 201 {
		t.Fatalf("upload: %d %v", code, out)
	}
	if code := p.call(t, "POST", "/api/moderation/"+run, mod, map[string]string{"decision": "changes_requested", "reason": "state the driver version"}, &e); code != 200 {
		t.Fatalf("decision: %d %v", code, e)
	}
	deadline := time.Now().Add(20 * time.Second)
	var msgs []testenv.Message
	for len(msgs) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		msgs = mail.Messages(t)
	}
	if len(msgs) != 1 || msgs[0].To[0].Address != "alice@lab.example" || msgs[0].From.Address != "lem@lem.example" ||
		!strings.Contains(msgs[0].Subject, "changes requested") || !strings.Contains(msgs[0].Subject, "state the driver version") ||
		!strings.Contains(msgs[0].Snippet, "https://lem.example/runs/"+run) {
		t.Fatalf("mail: %+v", msgs)
	}
	var log []Attempt
	if p.call(t, "GET", "/api/notifications/deliveries/email:alice", alice, nil, &log); len(log) != 1 || !log[0].OK {
		t.Errorf("e-mail log: %+v", log)
	}
}
