// Package bus is the NATS JetStream plumbing shared by collectors, ingest
// and the runner: an embedded server, connection options, the stream
// definitions and a batching-friendly async publisher.
package bus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/schemas"
)

// Stream names.
const (
	EventStream      = "LEM_V1"
	DeadLetterStream = "LEM_DLQ_V1"
)

// StreamConfig sizes the event stream.
type StreamConfig struct {
	// MaxAge bounds how long events stay replayable (0: 7 days).
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes bounds the stream's storage (0: 10 GiB). Oldest go first.
	MaxBytes int64 `yaml:"max_bytes"`
	// Replicas is 1 for a single server, 3 for a cluster.
	Replicas int `yaml:"replicas"`
	// Duplicates is the window in which a repeated Nats-Msg-Id is dropped;
	// it must exceed the publishers' retry horizon (0: 10 minutes).
	Duplicates time.Duration `yaml:"duplicates"`
	// Memory stores the stream in memory (tests, benchmarks).
	Memory bool `yaml:"memory"`
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.MaxAge == 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 10 << 30
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = 10 * time.Minute
	}
	return c
}

// EnsureStreams creates or updates the event and dead-letter streams.
// Limits retention (not work-queue) keeps events replayable for backfill
// and for a second consumer such as the Parquet sink.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	c = c.withDefaults()
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStream,
		Description: "llm-energy-measure events, wire v1",
		Subjects:    []string{schemas.SubjectRoot + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		Replicas:    c.Replicas,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.MaxBytes,
		Duplicates:  c.Duplicates,
		MaxMsgSize:  schemas.MaxMessageSize,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("creating stream %s: %w", EventStream, err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "events ingest could not accept, with the reason in headers",
		Subjects:    []string{schemas.DeadLetterRoot + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		Replicas:    c.Replicas,
		MaxAge:      30 * 24 * time.Hour,
		MaxBytes:    c.MaxBytes / 10,
		Duplicates:  c.Duplicates,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("creating stream %s: %w", DeadLetterStream, err)
	}
	return nil
}

// Embedded is an in-process NATS server with JetStream.
type Embedded struct {
	Server *server.Server
	token  string
}

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	StoreDir string // JetStream file store; required
	// Listen, if set (host:port, port 0 for a free one), also accepts TCP
	// clients such as a separate `lem agent`. Empty: in-process only.
	Listen string
	// Token, if set, is required of every client (the in-process ones
	// present it themselves).
	Token string
	// Cluster, if its Listen is set, makes this server one node of a
	// JetStream cluster (streams then take Replicas 3: bus.StreamConfig).
	Cluster ClusterConfig
}

// ClusterConfig joins an embedded server to a NATS cluster: every node
// listens for routes on Listen and dials the others' Routes; each has a
// unique Name (JetStream's Raft needs it) and the same cluster Name.
type ClusterConfig struct {
	Name       string   // the cluster's name, the same on every node
	ServerName string   // this node's name, unique in the cluster
	Listen     string   // host:port for routes from the other nodes
	Routes     []string // the other nodes' route URLs (nats://host:port)
}

// StartEmbedded starts an embedded JetStream server.
func StartEmbedded(c EmbeddedConfig) (*Embedded, error) {
	if c.StoreDir == "" {
		return nil, errors.New("embedded nats: store dir required")
	}
	opts := &server.Options{
		ServerName:    "lem-embedded",
		JetStream:     true,
		StoreDir:      c.StoreDir,
		DontListen:    c.Listen == "",
		NoSigs:        true,
		MaxPayload:    schemas.MaxMessageSize,
		Authorization: c.Token,
	}
	if c.Listen != "" {
		host, port, err := splitHostPort(c.Listen)
		if err != nil {
			return nil, err
		}
		if port == 0 {
			port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
		}
		opts.Host, opts.Port = host, port
	}
	if cl := c.Cluster; cl.Listen != "" {
		host, port, err := splitHostPort(cl.Listen)
		if err != nil {
			return nil, fmt.Errorf("cluster %w", err)
		}
		if cl.ServerName == "" || cl.Name == "" {
			return nil, errors.New("embedded nats: a cluster node needs the cluster's name and a server name of its own")
		}
		opts.ServerName = cl.ServerName
		opts.Cluster = server.ClusterOpts{Name: cl.Name, Host: host, Port: port}
		for _, r := range cl.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("embedded nats: route %q: want nats://host:port", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return &Embedded{Server: ns, token: c.Token}, nil
}

// Connect returns an in-process client connection.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(e.Server), nats.Name(name), nats.MaxReconnects(-1)}
	if e.token != "" {
		opts = append(opts, nats.Token(e.token))
	}
	return nats.Connect("", opts...)
}

// ClientURL returns the TCP URL when the server listens, else "".
func (e *Embedded) ClientURL() string {
	if e.Server.Addr() == nil {
		return ""
	}
	return e.Server.ClientURL()
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

func splitHostPort(s string) (string, int, error) {
	var host string
	var port int
	i := len(s) - 1
	for i >= 0 && s[i] != ':' {
		i--
	}
	if i < 0 {
		return "", 0, fmt.Errorf("listen address %q: want host:port", s)
	}
	host = s[:i]
	if _, err := fmt.Sscanf(s[i+1:], "%d", &port); err != nil {
		return "", 0, fmt.Errorf("listen address %q: bad port", s)
	}
	return host, port, nil
}

// Connect dials NATS at url (comma-separated for a cluster) the way every
// lem process does: a server unreachable at start is retried in the
// background instead of failing (publishers spool meanwhile), reconnects
// never give up, and connection changes are logged. opts add
// authentication and TLS.
func Connect(url, name string, log zerolog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// A server cut off without closing the connection (a network
		// partition) is noticed after PingInterval × MaxPingsOutstanding,
		// not the default 2 min × 2: a collector moves to another node of
		// the cluster within ~15 s.
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Str("nats", url).Msg("NATS disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("nats", c.ConnectedUrlRedacted()).Msg("NATS connected")
		}),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS %s: %w", url, err)
	}
	if !nc.IsConnected() {
		log.Warn().Str("nats", url).Msg("NATS unreachable; retrying in the background")
	}
	return nc, nil
}

// PingInterval is how often every lem connection pings its NATS server.
const PingInterval = 5 * time.Second

// WaitConnected blocks until nc is connected or ctx ends.
func WaitConnected(ctx context.Context, nc *nats.Conn) error {
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for NATS: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Transient says whether a JetStream error is one that passes by itself: a
// timeout, no responders or no leader while a cluster elects one, a lost
// connection. A stream configured otherwise than asked, bad credentials
// and the like are not.
func Transient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 10008: JetStream temporarily unavailable (no meta leader);
		// 503 answers in general.
		return apiErr.ErrorCode == 10008 || apiErr.Code == 503
	}
	return false
}

// WaitIngested returns once ingest has stored every event that was on the
// event stream when it was called: each ingest consumer (ingest-<kind>)
// has acknowledged — it acknowledges only what its sink has written — up
// to the stream's last sequence then, or has nothing left at all. An
// error when ctx ends first.
func WaitIngested(ctx context.Context, js jetstream.JetStream) error {
	st, err := js.Stream(ctx, EventStream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	for {
		done := true
		for _, k := range schemas.Kinds {
			c, err := st.Consumer(ctx, "ingest-"+k.String())
			if err != nil {
				done = false
				break
			}
			ci, err := c.Info(ctx)
			if err != nil || !(ci.AckFloor.Stream >= last || ci.NumPending == 0 && ci.NumAckPending == 0) {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ingest has not stored the event stream up to sequence %d: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
