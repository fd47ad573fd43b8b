package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/internal/spool"
	"github.com/llm-energy-measure/lem/schemas"
)

// Publisher encodes events and publishes them asynchronously with a bounded
// number of unacknowledged messages. Messages whose publish failed are kept
// and retried synchronously by Flush, under their original Nats-Msg-Id, so
// the stream's duplicate window drops any that had in fact arrived.
type Publisher struct {
	js    jetstream.JetStream
	nc    *nats.Conn
	spool *spool.Spool // nil: failed messages are held in memory

	mu     sync.Mutex
	failed []*nats.Msg

	published atomic.Uint64
	bytes     atomic.Uint64
	stalls    atomic.Uint64
}

// NewPublisher wraps nc. maxPending bounds unacknowledged messages (0: 4096);
// Publish blocks while that many are outstanding (back-pressure), however
// long JetStream takes to acknowledge them, and never fails because of it.
func NewPublisher(nc *nats.Conn, maxPending int) (*Publisher, error) {
	if maxPending <= 0 {
		maxPending = 4096
	}
	p := &Publisher{nc: nc}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
			if p.spool != nil && p.spool.Append(m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Data) == nil {
				return
			}
			p.mu.Lock()
			p.failed = append(p.failed, m)
			p.mu.Unlock()
		}))
	if err != nil {
		return nil, err
	}
	p.js = js
	return p, nil
}

// JetStream returns the underlying context.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Publish encodes ev and publishes it to subject. msgID must identify the
// batch (e.g. source/device/first timestamp) so that retries deduplicate.
// The encoded bytes are owned by the publisher until acknowledged.
func (p *Publisher) Publish(subject, msgID string, ev schemas.Event) error {
	data := ev.AppendWire(make([]byte, 0, 256))
	return p.PublishRaw(subject, msgID, data)
}

// UseSpool makes the publisher write messages to sp while NATS is
// unreachable (and those whose publish failed); Drain sends them later.
func (p *Publisher) UseSpool(sp *spool.Spool) { p.spool = sp }

// PublishRaw publishes already-encoded bytes; data must not be modified
// afterwards.
func (p *Publisher) PublishRaw(subject, msgID string, data []byte) error {
	if p.spool != nil && (p.nc.Status() != nats.CONNECTED || p.spooled()) {
		// Keep order: while older messages wait in the spool, new ones
		// queue behind them.
		p.published.Add(1)
		return p.spool.Append(subject, msgID, data)
	}
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	// Back-pressure: while maxPending messages await acknowledgement (a
	// slow or busy JetStream) or the reconnect buffer is full, wait and
	// try again, so a collector slows down instead of failing; with a
	// spool, a message that waited SpoolAfter goes to disk instead.
	var start time.Time
	for {
		_, err := p.js.PublishMsgAsync(m, stallOpt)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) && !errors.Is(err, nats.ErrReconnectBufExceeded) {
			if p.spool != nil {
				// The connection failed under the write (a server cut off
				// mid-write: "i/o timeout"): the spool keeps the message
				// and Drain sends it again under its message id.
				p.published.Add(1)
				return p.spool.Append(subject, msgID, data)
			}
			return fmt.Errorf("publishing to %s: %w", subject, err)
		}
		p.stalls.Add(1)
		if start.IsZero() {
			start = time.Now()
		}
		if p.spool != nil && time.Since(start) >= SpoolAfter {
			p.published.Add(1)
			return p.spool.Append(subject, msgID, data)
		}
		if errors.Is(err, nats.ErrReconnectBufExceeded) {
			time.Sleep(stallWait)
		}
	}
	p.published.Add(1)
	p.bytes.Add(uint64(len(data)))
	return nil
}

// stallWait is how long one publish attempt waits for room among the
// unacknowledged messages before it is tried again.
const stallWait = 250 * time.Millisecond

var stallOpt = jetstream.WithStallWait(stallWait)

// SpoolAfter is how long a publish waits for JetStream before the message
// goes to the spool (when the publisher has one).
var SpoolAfter = 5 * time.Second

// Stalls returns how often a publish had to wait for acknowledgements.
func (p *Publisher) Stalls() uint64 { return p.stalls.Load() }

// Published returns the number of messages and payload bytes handed to NATS.
func (p *Publisher) Published() (msgs, bytes uint64) { return p.published.Load(), p.bytes.Load() }

// Flush waits until every published message is acknowledged, retrying
// failed ones synchronously until ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	for {
		select {
		case <-p.js.PublishAsyncComplete():
		case <-ctx.Done():
			return fmt.Errorf("flushing publisher: %d unacknowledged: %w", p.js.PublishAsyncPending(), ctx.Err())
		}
		p.mu.Lock()
		failed := p.failed
		p.failed = nil
		p.mu.Unlock()
		if len(failed) == 0 {
			return nil
		}
		for i, m := range failed {
			if err := p.retry(ctx, m); err != nil {
				p.mu.Lock()
				p.failed = append(p.failed, failed[i:]...)
				p.mu.Unlock()
				return err
			}
		}
	}
}

func (p *Publisher) retry(ctx context.Context, m *nats.Msg) error {
	backoff := 100 * time.Millisecond
	for {
		_, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
		if err == nil {
			return nil
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("retrying publish to %s: %w", m.Subject, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("retrying publish to %s: %w (last error: %v)", m.Subject, ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (p *Publisher) spooled() bool {
	n, _, _ := p.spool.Stats()
	return n > 0
}

// Drain publishes spooled messages whenever NATS is connected, until ctx
// ends. Run it in its own goroutine when a spool is used.
func (p *Publisher) Drain(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.spool == nil || p.nc.Status() != nats.CONNECTED || !p.spooled() {
			continue
		}
		_, _ = p.spool.Drain(func(subject, msgID string, data []byte) error {
			m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
			if msgID != "" {
				m.Header.Set(jetstream.MsgIDHeader, msgID)
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := p.js.PublishMsg(pctx, m)
			return err
		})
	}
}
