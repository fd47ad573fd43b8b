package platform

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
)

// Live progress of running jobs over WebSocket. A worker publishes each
// update once, on its job's subject in the progress stream; the platform
// reads a job's subject with one ordered consumer however many people
// watch it, keeps what it read, and fans it out in process. A viewer says
// the last stream sequence it saw (?after=N) and gets everything after it,
// then each update as it comes: a reconnecting viewer resumes with no gap
// and no duplicate.

// feed is one job's progress as read so far, and its viewers.
type feed struct {
	mu      sync.Mutex
	msgs    []Progress // in stream order
	changed chan struct{}
	viewers int
	stop    func()
}

// live holds the feeds of the jobs being watched.
type live struct {
	mu    sync.Mutex
	feeds map[string]*feed
}

// FeedLinger is how long a job's feed stays open after its last viewer
// left (a reconnect within it costs no new consumer).
const FeedLinger = 30 * time.Second

// watch returns the job's feed, starting its consumer for the first viewer;
// done must be called when the viewer leaves.
func (s *Server) watch(jobID string) (*feed, func(), error) {
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.feeds == nil {
		l.feeds = map[string]*feed{}
	}
	f := l.feeds[jobID]
	if f == nil {
		f = &feed{changed: make(chan struct{})}
		cons, err := s.cfg.Jobs.progress.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{ProgressSubject(jobID)}, DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			return nil, nil, err
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			var p Progress
			if json.Unmarshal(m.Data(), &p) != nil {
				return
			}
			if md, err := m.Metadata(); err == nil {
				p.Seq = md.Sequence.Stream
			}
			f.mu.Lock()
			f.msgs = append(f.msgs, p)
			close(f.changed)
			f.changed = make(chan struct{})
			f.mu.Unlock()
		})
		if err != nil {
			return nil, nil, err
		}
		f.stop = cc.Stop
		l.feeds[jobID] = f
	}
	f.viewers++
	done := func() {
		l.mu.Lock()
		f.viewers--
		l.mu.Unlock()
		time.AfterFunc(FeedLinger, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if f.viewers == 0 && l.feeds[jobID] == f {
				delete(l.feeds, jobID)
				f.stop()
			}
		})
	}
	return f, done, nil
}

// since returns the updates after sequence after, and a channel closed at
// the next one.
func (f *feed) since(after uint64) ([]Progress, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := len(f.msgs)
	for i > 0 && f.msgs[i-1].Seq > after {
		i--
	}
	return f.msgs[i:], f.changed
}

// handleLive streams a job's progress over WebSocket: every update after
// ?after=SEQ, then each new one, as JSON text messages carrying their
// stream sequence; the socket closes after the job's last update.
func (s *Server) handleLive(w http.ResponseWriter, r *http.Request, p *principal) {
	job, ok := s.jobOf(w, r, p)
	if !ok {
		return
	}
	after, err := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	if err != nil && r.URL.Query().Get("after") != "" {
		writeErr(w, http.StatusBadRequest, "after: %v", err)
		return
	}
	f, done, err := s.watch(job.ID)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	defer done()
	// Same-origin only (the socket carries the session cookie): the
	// library refuses another Origin.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context())
	for {
		msgs, changed := f.since(after)
		for _, m := range msgs {
			b, _ := json.Marshal(m)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				return
			}
			after = m.Seq
			if m.EndOfJob {
				c.Close(websocket.StatusNormalClosure, "the job ended")
				return
			}
		}
		select {
		case <-ctx.Done(): // the viewer left
			return
		case <-changed:
		}
	}
}
