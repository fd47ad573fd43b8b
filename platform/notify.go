package platform

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/schemas"
)

// Notifications: a user's webhooks (signed with HMAC-SHA256) and e-mail
// hear about their jobs' ends, moderators' decisions on their submissions
// and refused uploads. The notifier reads the platform's own events from
// the event stream (a durable consumer: none is lost across restarts,
// none sent twice for one event and endpoint), turns each into one
// delivery per endpoint on a work-queue stream, and a deliverer sends
// them, retrying with backoff and keeping a log per endpoint.
const (
	BucketHooks      = "lem_platform_hooks"
	BucketDeliveries = "lem_platform_delivery_log"
	DeliveryStream   = "LEM_DELIVERIES_V1"
	DeliverySubject  = "lem.notify.v1.deliveries"
	notifierConsumer = "platform-notifier"
	deliveryConsumer = "platform-deliverer"
	// DeliveryLogSize is how many attempts an endpoint's log keeps.
	DeliveryLogSize = 50
)

// Webhook is one of a user's endpoints. Its secret signs every delivery;
// it is shown once, when the hook is made.
type Webhook struct {
	ID        string `json:"id"`
	URL       string `json:"url"`
	Secret    string `json:"secret,omitempty"`
	CreatedNS int64  `json:"created_ns"`
}

// Subscriptions are a user's notification endpoints.
type Subscriptions struct {
	User     string    `json:"user"`
	Webhooks []Webhook `json:"webhooks"`
	Email    string    `json:"email,omitempty"` // where e-mail goes; empty: none
}

// Notification is what a user is told.
type Notification struct {
	ID      string          `json:"id"`   // the platform event's stream sequence
	Type    string          `json:"type"` // job.succeeded, job.failed, job.canceled, moderation.<decision>, upload.refused
	Subject string          `json:"subject"`
	User    string          `json:"user"`
	AtNS    int64           `json:"at_ns"`
	Summary string          `json:"summary"`
	Link    string          `json:"link,omitempty"`
	Detail  json.RawMessage `json:"detail"`
}

// delivery is one notification to one endpoint.
type delivery struct {
	Notification Notification `json:"notification"`
	Kind         string       `json:"kind"` // webhook or email
	Endpoint     string       `json:"endpoint"`
	URL          string       `json:"url,omitempty"`
	Email        string       `json:"email,omitempty"`
}

// Attempt is one try of a delivery, as the endpoint's log keeps it.
type Attempt struct {
	Notification string `json:"notification"`
	Type         string `json:"type"`
	Attempt      int    `json:"attempt"`
	AtNS         int64  `json:"at_ns"`
	Status       int    `json:"status,omitempty"` // HTTP status
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
	GaveUp       bool   `json:"gave_up,omitempty"`
}

// SMTPConfig sends e-mail (STARTTLS required).
type SMTPConfig struct {
	Addr     string // host:port
	From     string
	User     string
	Password string
	// CAFile is a PEM file of the CA that signed the server's certificate
	// (empty: the system's roots).
	CAFile string
}

// NotifyConfig tunes the notifier.
type NotifyConfig struct {
	SMTP SMTPConfig
	// Backoff is the first retry's delay, doubling (1 s); MaxAttempts
	// bounds the tries (7: about a minute of retries at 1 s).
	Backoff     time.Duration
	MaxAttempts int
	// AllowPrivate lets webhooks reach loopback and private addresses
	// (refused by default: the platform must not be a way into its own
	// network).
	AllowPrivate bool
	// PublicURL makes links in notifications absolute.
	PublicURL string
	Memory    bool
}

// Notifier reads platform events and delivers notifications.
type Notifier struct {
	js         jetstream.JetStream
	state      *State
	hooks, log jetstream.KeyValue
	stream     jetstream.Stream
	cfg        NotifyConfig
	client     *http.Client
	mu         sync.Mutex // serialises a log's read-modify-write
}

// OpenNotifier creates (or opens) the notification buckets and stream.
func OpenNotifier(ctx context.Context, js jetstream.JetStream, st *State, c NotifyConfig) (*Notifier, error) {
	if c.Backoff == 0 {
		c.Backoff = time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 7
	}
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	n := &Notifier{js: js, state: st, cfg: c}
	var err error
	if n.hooks, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketHooks, Description: "lem platform: users' notification endpoints", Storage: storage}); err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", BucketHooks, err)
	}
	if n.log, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketDeliveries, Description: "lem platform: each endpoint's last delivery attempts", Storage: storage}); err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", BucketDeliveries, err)
	}
	if n.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DeliveryStream, Description: "lem platform: notifications to deliver",
		Subjects: []string{DeliverySubject}, Retention: jetstream.WorkQueuePolicy, Storage: storage, Duplicates: time.Hour}); err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", DeliveryStream, err)
	}
	dial := &net.Dialer{Timeout: 10 * time.Second}
	if !c.AllowPrivate {
		dial.Control = refusePrivate
	}
	n.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: dial.DialContext, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return n, nil
}

// refusePrivate refuses connections to loopback, private, link-local and
// unspecified addresses (checked on the address actually dialled, so a
// name that resolves to one is refused too).
func refusePrivate(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() {
		return fmt.Errorf("webhook address %s is loopback, private or link-local (lem web -webhook-allow-private allows it)", host)
	}
	return nil
}

// Subscriptions returns a user's endpoints (secrets removed).
func (n *Notifier) Subscriptions(ctx context.Context, user string) (Subscriptions, error) {
	s, _, err := get[Subscriptions](ctx, n.hooks, kvKey(user))
	s.User = user
	for i := range s.Webhooks {
		s.Webhooks[i].Secret = ""
	}
	if s.Webhooks == nil {
		s.Webhooks = []Webhook{}
	}
	return s, err
}

func (n *Notifier) update(ctx context.Context, user string, f func(*Subscriptions) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, _, err := get[Subscriptions](ctx, n.hooks, kvKey(user))
	if err != nil {
		return err
	}
	s.User = user
	if err := f(&s); err != nil {
		return err
	}
	return put(ctx, n.hooks, kvKey(user), s)
}

// AddWebhook registers an endpoint and returns it with its secret.
func (n *Notifier) AddWebhook(ctx context.Context, user, raw string) (Webhook, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return Webhook{}, fmt.Errorf("webhook url %q: want http(s)://host/path without credentials", raw)
	}
	secret, err := randomSecret()
	if err != nil {
		return Webhook{}, err
	}
	id, err := randomSecret()
	if err != nil {
		return Webhook{}, err
	}
	h := Webhook{ID: "wh_" + strings.ToLower(id[:16]), URL: u.String(), Secret: "whsec_" + secret, CreatedNS: time.Now().UnixNano()}
	err = n.update(ctx, user, func(s *Subscriptions) error {
		if len(s.Webhooks) >= 10 {
			return errors.New("at most 10 webhooks per user")
		}
		s.Webhooks = append(s.Webhooks, h)
		return nil
	})
	return h, err
}

// DeleteWebhook removes one of a user's endpoints.
func (n *Notifier) DeleteWebhook(ctx context.Context, user, id string) error {
	return n.update(ctx, user, func(s *Subscriptions) error {
		i := slices.IndexFunc(s.Webhooks, func(h Webhook) bool { return h.ID == id })
		if i < 0 {
			return fmt.Errorf("no webhook %q", id)
		}
		s.Webhooks = slices.Delete(s.Webhooks, i, i+1)
		return nil
	})
}

// SetEmail turns e-mail on (to address) or off ("").
func (n *Notifier) SetEmail(ctx context.Context, user, address string) error {
	return n.update(ctx, user, func(s *Subscriptions) error { s.Email = address; return nil })
}

// Log returns an endpoint's last attempts, newest last.
func (n *Notifier) Log(ctx context.Context, endpoint string) ([]Attempt, error) {
	l, _, err := get[[]Attempt](ctx, n.log, kvKey(endpoint))
	if l == nil {
		l = []Attempt{}
	}
	return l, err
}

func (n *Notifier) record(ctx context.Context, endpoint string, a Attempt) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, _, _ := get[[]Attempt](ctx, n.log, kvKey(endpoint))
	l = append(l, a)
	if len(l) > DeliveryLogSize {
		l = l[len(l)-DeliveryLogSize:]
	}
	put(ctx, n.log, kvKey(endpoint), l)
}

// notification turns a platform event into what its user is told (false:
// nobody is told about this event).
func (n *Notifier) notification(ctx context.Context, seq uint64, pe *schemas.PlatformEvent) (Notification, bool) {
	no := Notification{ID: fmt.Sprint(seq), Type: pe.Type, Subject: pe.Subject, AtNS: pe.TS, Detail: json.RawMessage(pe.Payload)}
	link := func(path string) string { return strings.TrimSuffix(n.cfg.PublicURL, "/") + path }
	switch pe.Type {
	case "job.succeeded", "job.failed", "job.canceled":
		var j Job
		if json.Unmarshal([]byte(pe.Payload), &j) != nil {
			return no, false
		}
		no.User, no.Link = j.User, link("/jobs/"+j.ID)
		no.Summary = fmt.Sprintf("job %s (%s on %s) %s", j.ID, j.Experiment, j.Profile, strings.TrimPrefix(pe.Type, "job."))
		if j.Error != "" {
			no.Summary += ": " + j.Error
		}
		j.Config, j.LogTail = "", "" // the detail stays small
		no.Detail, _ = json.Marshal(j)
	case "moderation.approved", "moderation.rejected", "moderation.changes_requested":
		var d Decision
		if json.Unmarshal([]byte(pe.Payload), &d) != nil {
			return no, false
		}
		p, ok, _ := n.state.Run(ctx, d.RunID)
		if !ok {
			return no, false
		}
		no.User, no.Link = p.Entry.Submitter, link("/runs/"+d.RunID)
		no.Summary = fmt.Sprintf("run %s: %s by a moderator", d.RunID, strings.ReplaceAll(d.Decision, "_", " "))
		if d.Reason != "" {
			no.Summary += ": " + d.Reason
		}
	case "upload.refused":
		var u Upload
		if json.Unmarshal([]byte(pe.Payload), &u) != nil {
			return no, false
		}
		no.User = u.User
		no.Summary = fmt.Sprintf("upload of run %s refused: %s", u.RunID, u.Reason)
		u.Report = nil
		no.Detail, _ = json.Marshal(u)
	default:
		return no, false
	}
	return no, no.User != ""
}

// Run fans platform events out into deliveries and delivers them until
// ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	stream, err := n.js.StreamNameBySubject(ctx, SubjectPlatform+".x")
	if err != nil {
		return err
	}
	// New events only: a platform that turns notifications on does not
	// send its history.
	cons, err := n.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: notifierConsumer,
		FilterSubject: SubjectPlatform + ".>", DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
	if err != nil {
		return err
	}
	fan, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			m.Term()
			return
		}
		ev, err := schemas.Decode(m.Data())
		pe, ok := ev.(*schemas.PlatformEvent)
		if err != nil || !ok {
			m.Ack()
			return
		}
		no, ok := n.notification(ctx, md.Sequence.Stream, pe)
		if !ok {
			m.Ack()
			return
		}
		subs, _, err := get[Subscriptions](ctx, n.hooks, kvKey(no.User))
		if err != nil {
			m.NakWithDelay(time.Second)
			return
		}
		var ds []delivery
		for _, h := range subs.Webhooks {
			ds = append(ds, delivery{Notification: no, Kind: "webhook", Endpoint: h.ID, URL: h.URL})
		}
		if subs.Email != "" && n.cfg.SMTP.Addr != "" {
			ds = append(ds, delivery{Notification: no, Kind: "email", Endpoint: "email:" + no.User, Email: subs.Email})
		}
		for _, d := range ds {
			b, _ := json.Marshal(d)
			// One delivery per event and endpoint, whatever is redelivered.
			if _, err := n.js.Publish(ctx, DeliverySubject, b, jetstream.WithMsgID(no.ID+"/"+d.Endpoint)); err != nil {
				m.NakWithDelay(time.Second)
				return
			}
		}
		m.Ack()
	})
	if err != nil {
		return err
	}
	defer fan.Stop()
	dcons, err := n.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: deliveryConsumer, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Minute, MaxDeliver: n.cfg.MaxAttempts})
	if err != nil {
		return err
	}
	del, err := dcons.Consume(func(m jetstream.Msg) { n.deliver(ctx, m) }, jetstream.PullMaxMessages(8))
	if err != nil {
		return err
	}
	defer del.Stop()
	<-ctx.Done()
	return nil
}

// deliver tries one delivery, logs the attempt, and retries it later
// (doubling delays) until it succeeds or the attempts run out.
func (n *Notifier) deliver(ctx context.Context, m jetstream.Msg) {
	var d delivery
	if json.Unmarshal(m.Data(), &d) != nil {
		m.Term()
		return
	}
	attempt := 1
	if md, err := m.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	a := Attempt{Notification: d.Notification.ID, Type: d.Notification.Type, Attempt: attempt, AtNS: time.Now().UnixNano()}
	var err error
	switch d.Kind {
	case "webhook":
		a.Status, err = n.postWebhook(ctx, d)
	case "email":
		err = n.sendEmail(d)
	default:
		err = fmt.Errorf("unknown delivery kind %q", d.Kind)
	}
	if err == nil {
		a.OK = true
		n.record(ctx, d.Endpoint, a)
		m.Ack()
		return
	}
	a.Error = err.Error()
	if attempt >= n.cfg.MaxAttempts {
		a.GaveUp = true
		n.record(ctx, d.Endpoint, a)
		m.Term()
		return
	}
	n.record(ctx, d.Endpoint, a)
	m.NakWithDelay(n.cfg.Backoff << (attempt - 1))
}

// SignWebhook is a webhook body's signature: "sha256=" and the hex HMAC-SHA256 of
// the body with the hook's secret, in the X-Lem-Signature header.
func SignWebhook(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func (n *Notifier) postWebhook(ctx context.Context, d delivery) (int, error) {
	subs, _, err := get[Subscriptions](ctx, n.hooks, kvKey(d.Notification.User))
	if err != nil {
		return 0, err
	}
	i := slices.IndexFunc(subs.Webhooks, func(h Webhook) bool { return h.ID == d.Endpoint })
	if i < 0 {
		return 0, errors.New("the webhook was deleted")
	}
	body, _ := json.Marshal(d.Notification)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lem-webhook/1")
	req.Header.Set("X-Lem-Event", d.Notification.Type)
	req.Header.Set("X-Lem-Delivery", d.Notification.ID)
	req.Header.Set("X-Lem-Signature", SignWebhook(subs.Webhooks[i].Secret, body))
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the endpoint answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// sendEmail sends one notification over SMTP, refusing a server that does
// not offer STARTTLS.
func (n *Notifier) sendEmail(d delivery) error {
	c := n.cfg.SMTP
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return err
	}
	cl, err := smtp.Dial(c.Addr)
	if err != nil {
		return err
	}
	defer cl.Close()
	if ok, _ := cl.Extension("STARTTLS"); !ok {
		return fmt.Errorf("SMTP server %s does not offer STARTTLS; lem does not send mail in the clear", c.Addr)
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificate", c.CAFile)
		}
	}
	if err := cl.StartTLS(tc); err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	if c.User != "" {
		if err := cl.Auth(smtp.PlainAuth("", c.User, c.Password, host)); err != nil {
			return fmt.Errorf("SMTP authentication: %w", err)
		}
	}
	if err := cl.Mail(c.From); err != nil {
		return err
	}
	if err := cl.Rcpt(d.Email); err != nil {
		return err
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	no := d.Notification
	subject := strings.NewReplacer("\r", " ", "\n", " ").Replace("[lem] " + no.Summary)
	if len(subject) > 200 {
		subject = subject[:200]
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <lem-%s-%s@lem>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		c.From, d.Email, subject, time.Now().UTC().Format(time.RFC1123Z), no.ID, strings.ReplaceAll(d.Endpoint, ":", "-"), no.Summary)
	if no.Link != "" {
		fmt.Fprintf(w, "\r\n%s\r\n", no.Link)
	}
	if err := w.Close(); err != nil {
		return err
	}
	return cl.Quit()
}

// --- HTTP ---

func (s *Server) withNotifier(h func(w http.ResponseWriter, r *http.Request, p *principal)) http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, p *principal) {
		if s.cfg.Notifier == nil {
			writeErr(w, http.StatusNotFound, "this platform sends no notifications")
			return
		}
		h(w, r, p)
	})
}

// handleSubscriptions answers the user's endpoints, or available: false
// where the platform sends no notifications (the settings page asks).
func (s *Server) handleSubscriptions(w http.ResponseWriter, r *http.Request, p *principal) {
	if s.cfg.Notifier == nil {
		writeJSON(w, http.StatusOK, map[string]any{"available": false})
		return
	}
	subs, err := s.cfg.Notifier.Subscriptions(r.Context(), p.User.ID)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"available": true, "webhooks": subs.Webhooks, "email": subs.Email, "email_available": s.cfg.Notifier.cfg.SMTP.Addr != "" && p.User.Email != "",
		"events": []string{"job.succeeded", "job.failed", "job.canceled", "moderation.approved", "moderation.rejected", "moderation.changes_requested", "upload.refused"}})
}

func (s *Server) handleAddWebhook(w http.ResponseWriter, r *http.Request, p *principal) {
	var req struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "webhook: %v", err)
		return
	}
	h, err := s.cfg.Notifier.AddWebhook(r.Context(), p.User.ID, req.URL)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, h)
}

func (s *Server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request, p *principal) {
	if err := s.cfg.Notifier.DeleteWebhook(r.Context(), p.User.ID, r.PathValue("id")); err != nil {
		writeErr(w, http.StatusNotFound, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"deleted": true})
}

func (s *Server) handleDeliveries(w http.ResponseWriter, r *http.Request, p *principal) {
	subs, err := s.cfg.Notifier.Subscriptions(r.Context(), p.User.ID)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	id := r.PathValue("id")
	if !slices.ContainsFunc(subs.Webhooks, func(h Webhook) bool { return h.ID == id }) && id != "email:"+p.User.ID {
		writeErr(w, http.StatusNotFound, "no webhook %q", id)
		return
	}
	l, err := s.cfg.Notifier.Log(r.Context(), id)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// handleEmail turns e-mail notifications on (to the address the user's
// sign-in provider gave) or off.
func (s *Server) handleEmail(w http.ResponseWriter, r *http.Request, p *principal) {
	var req struct {
		Enabled bool `json:"enabled"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "email: %v", err)
		return
	}
	addr := ""
	if req.Enabled {
		if s.cfg.Notifier.cfg.SMTP.Addr == "" {
			writeErr(w, http.StatusConflict, "this platform has no mail server (lem web -smtp)")
			return
		}
		if addr = p.User.Email; addr == "" {
			writeErr(w, http.StatusConflict, "user %s has no e-mail address from their sign-in provider", p.User.ID)
			return
		}
	}
	if err := s.cfg.Notifier.SetEmail(r.Context(), p.User.ID, addr); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"email": addr})
}
