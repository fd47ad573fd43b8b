//go:build linux

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

// bracket is when the test server began writing a chunk and when its
// flush returned (ns since the epoch).
type bracket struct{ before, after int64 }

// pacedChunks is an SSE handler that writes n one-character chunks,
// sleeping pause(k) after chunk k, and records each write's bracket.
type pacedChunks struct {
	n     int
	pause func(k int) time.Duration
	mu    sync.Mutex // the handler's goroutine writes, the test reads
	w     []bracket
}

func (p *pacedChunks) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	for k := range p.n {
		b := time.Now().UnixNano()
		fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"%c\"}]}\n\n", 'a'+k%26)
		fl.Flush()
		p.mu.Lock()
		p.w = append(p.w, bracket{b, time.Now().UnixNano()})
		p.mu.Unlock()
		time.Sleep(p.pause(k))
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// written returns the brackets of the chunks written so far.
func (p *pacedChunks) written() []bracket {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.w)
}

// A chunk is stamped when its bytes reached the host, not when the client
// got round to reading them: the server sends pairs of chunks 10 ms apart;
// the client is busy for 30 ms after the first of each pair (as a client
// serving a thousand streams is), so it reads the second ~20 ms after it
// arrived. Its kernel stamp lies within the server's write of it; the
// time the client read it (what user-space stamping gave) is late.
func TestKernelStampsIgnoreClientDelay(t *testing.T) {
	const pairs = 10
	h := &pacedChunks{n: 2 * pairs, pause: func(k int) time.Duration {
		if k%2 == 0 {
			return 10 * time.Millisecond
		}
		return 60 * time.Millisecond
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := NewClient(srv.URL, "m")
	var mu sync.Mutex
	var readAt []int64
	c.OnText = func(_, _ string) {
		mu.Lock()
		readAt = append(readAt, time.Now().UnixNano())
		k := len(readAt) - 1
		mu.Unlock()
		if k%2 == 0 {
			time.Sleep(30 * time.Millisecond) // busy with other streams
		}
	}
	res := c.Do(context.Background(), "r", "hi", 2*pairs, time.Now().UnixNano())
	if res.Request.Error != "" || len(res.Chunks) != 2*pairs {
		t.Fatalf("%d chunks, %q", len(res.Chunks), res.Request.Error)
	}
	written := h.written()
	// The send time is the kernel's transmit time of the request, before
	// the server wrote anything back.
	if !res.Request.SentKernel || res.Request.Sent >= written[0].before {
		t.Errorf("send stamp %d (kernel %v), the server's first write at %d", res.Request.Sent, res.Request.SentKernel, written[0].before)
	}
	if res.Request.KernelStamped != 2*pairs {
		for k, ch := range res.Chunks {
			if !ch.Kernel {
				t.Logf("chunk %d: user-space stamp %d, server wrote it at %d–%d, sent %d", k, ch.TS, written[k].before, written[k].after, res.Request.Sent)
			}
		}
		t.Fatalf("%d of %d chunks kernel-stamped", res.Request.KernelStamped, 2*pairs)
	}
	worst, lateRead := int64(0), int64(0)
	for k, ch := range res.Chunks {
		w := written[k]
		// Arrival lies between the server's write and shortly after it
		// (loopback): allow 2 ms for the write's own return.
		if !ch.Kernel || ch.TS < w.before || ch.TS > w.after+2e6 {
			t.Errorf("chunk %d: stamp %+.3f ms from the server's write (kernel %v)", k, float64(ch.TS-w.before)/1e6, ch.Kernel)
		}
		worst = max(worst, ch.TS-w.before)
		if k%2 == 1 {
			lateRead = max(lateRead, readAt[k]-w.before)
		}
	}
	// On a busy machine the server's own 10 ms pause overshoots and some
	// pairs lose the delay; the test must still show it for some.
	if lateRead < 12e6 {
		t.Errorf("the client read no delayed chunk more than %.1f ms after the server wrote it: the test no longer shows the delay", float64(lateRead)/1e6)
	}
	t.Logf("kernel stamps within %.3f ms of the server's writes; the client read a delayed chunk up to %.1f ms late", float64(worst)/1e6, float64(lateRead)/1e6)
}

// stampedPair returns a stamped client connection to a fresh loopback
// listener and the server's end of it; both close when the test ends.
func stampedPair(t *testing.T) (*stampConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	sc, ok := kernelStamped(c).(*stampConn)
	if !ok {
		t.Fatal("kernel stamps refused on a loopback TCP connection")
	}
	t.Cleanup(func() { sc.Close(); s.Close() })
	return sc, s
}

// The first data on a fresh connection carries a kernel stamp: the kernel
// turns packet stamping on lazily when the first stamping socket appears
// and off when the last closes, and a client keeps it on. Without that,
// this test's first connection came unstamped here (and CI once saw a
// stream's first chunk without its stamp).
func TestFirstReadOfFreshConnectionKernelStamped(t *testing.T) {
	NewClient("http://127.0.0.1:1", "m") // what every run does first
	for i := 0; i < 100; i++ {
		sc, s := stampedPair(t)
		before := time.Now().UnixNano()
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := sc.Read(b); err != nil {
			t.Fatal(err)
		}
		if k, _, _ := sc.KernelStamp(); k < before || k > time.Now().UnixNano() {
			t.Fatalf("connection %d: first read stamped %d, written at %d", i, k, before)
		}
		sc.Close()
		s.Close()
	}
}

// A client that fell behind finds several events queued at once. Linux
// merges a segment that arrives behind unread data into it, with the newer
// time. The receive reactor reads each segment as it comes, so every chunk
// keeps its own time however late the client parses it; without the
// reactor only the last line of such a read has its own time, and the
// others keep the read's time as an upper bound and are not counted as
// kernel-stamped. The server writes bursts of five events 10 ms apart and
// the client is busy 60 ms after each burst's first, so the other four
// wait together (the reactor has 10 ms to read each, also on a loaded
// machine). Over TLS the same holds record by record.
func TestKernelStampsOfQueuedEvents(t *testing.T) {
	for _, m := range []struct{ tls, reactor bool }{{false, true}, {true, true}, {false, false}, {true, false}} {
		tls, reactor := m.tls, m.reactor
		t.Run(fmt.Sprintf("tls=%v/reactor=%v", tls, reactor), func(t *testing.T) {
			Reactor = reactor
			defer func() { Reactor = true }()
			const bursts, per = 4, 5
			h := &pacedChunks{n: bursts * per, pause: func(k int) time.Duration {
				if k%per == per-1 {
					return 80 * time.Millisecond
				}
				return 10 * time.Millisecond
			}}
			var srv *httptest.Server
			if tls {
				srv = httptest.NewTLSServer(h)
			} else {
				srv = httptest.NewServer(h)
			}
			defer srv.Close()
			c := NewClient(srv.URL, "m")
			if tls {
				c.HTTP.Transport.(*http.Transport).TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
			}
			n := 0
			c.OnText = func(_, _ string) {
				if n%per == 0 {
					time.Sleep(60 * time.Millisecond)
				}
				n++
			}
			res := c.Do(context.Background(), "r", "hi", h.n, time.Now().UnixNano())
			written := h.written()
			if res.Request.Error != "" || len(res.Chunks) != len(written) {
				t.Fatalf("%d chunks, %q", len(res.Chunks), res.Request.Error)
			}
			exact, worstBound := 0, int64(0)
			for k, ch := range res.Chunks {
				w := written[k]
				if ch.TS < w.before {
					t.Errorf("chunk %d: stamped %.3f ms before the server wrote it", k, float64(w.before-ch.TS)/1e6)
				}
				if ch.Kernel {
					exact++
					if ch.TS > w.after+2e6 {
						t.Errorf("chunk %d: counted exact, stamped %+.3f ms after the server's write", k, float64(ch.TS-w.before)/1e6)
					}
				} else {
					worstBound = max(worstBound, ch.TS-w.before)
				}
			}
			if exact != int(res.Request.KernelStamped) {
				t.Errorf("%d chunks marked exact, the request counts %d", exact, res.Request.KernelStamped)
			}
			switch {
			case reactor && exact < len(written)-2:
				t.Errorf("%d of %d chunks exact; the reactor read each as it came", exact, len(written))
			case !reactor && (exact > len(written)-2*bursts || exact < bursts):
				t.Errorf("%d of %d chunks exact; want about each burst's first and last (the others waited behind them)", exact, len(written))
			}
			t.Logf("%d of %d chunks exact; the queued ones are bounds up to %.1f ms late", exact, len(written), float64(worstBound)/1e6)
		})
	}
}

// The kernel's transmit time of a write's last byte comes back matched to
// that write: within the write call on loopback, and the latest write's,
// not an earlier one's.
func TestTransmitStampOfTheLatestWrite(t *testing.T) {
	sc, s := stampedPair(t)
	go io.Copy(io.Discard, s)
	if !sc.tx {
		t.Fatal("the kernel refused transmit stamps on a loopback TCP connection")
	}
	prev := int64(0)
	for i, size := range []int{1, 300, 70000, 5} {
		before := time.Now().UnixNano()
		if _, err := sc.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		after := time.Now().UnixNano()
		time.Sleep(2 * time.Millisecond)
		tx := sc.SendStamp()
		if size >= 1000 {
			// A small write leaves during the call; a large one's last
			// byte may wait for the peer's window.
			after = time.Now().UnixNano()
		}
		if tx < before || tx > after || tx <= prev {
			t.Fatalf("write %d (%d bytes) at %d–%d: transmit stamp %d (previous %d)", i, size, before, after, tx, prev)
		}
		prev = tx
	}
}

// A read waiting on the reactor ends at its deadline with a timeout, and
// when the connection is closed under it (how the HTTP transport cancels
// a request) with net.ErrClosed: nothing hangs.
func TestReactorReadDeadlineAndClose(t *testing.T) {
	for _, how := range []string{"deadline", "close"} {
		sc, s := stampedPair(t)
		if sc.rc == nil {
			t.Fatal("no receive reactor (built without cgo?)")
		}
		start := time.Now()
		if how == "deadline" {
			sc.SetReadDeadline(start.Add(50 * time.Millisecond))
		} else {
			time.AfterFunc(50*time.Millisecond, func() { sc.Close() })
		}
		_, err := sc.Read(make([]byte, 10))
		el := time.Since(start)
		var ne net.Error
		switch {
		case how == "deadline" && !(errors.As(err, &ne) && ne.Timeout()):
			t.Errorf("deadline: %v, want a timeout", err)
		case how == "close" && !errors.Is(err, net.ErrClosed):
			t.Errorf("close: %v, want net.ErrClosed", err)
		case el < 40*time.Millisecond || el > 2*time.Second:
			t.Errorf("%s: the read returned after %v", how, el)
		}
		sc.Close()
		s.Close()
	}
}

// DoAt prepares a request early and it leaves at its deadline: the kernel's
// transmit time lies at or just after the deadline, not when DoAt was
// called 20 ms before.
func TestDoAtLeavesAtItsDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "m")
	c.Do(context.Background(), "warm", "p", 1, c.Clock.Now()) // a connection to reuse
	for i := 0; i < 5; i++ {
		due := c.Clock.Now() + int64(20*time.Millisecond)
		res := c.DoAt(context.Background(), fmt.Sprint("r", i), "p", 1, due)
		q := res.Request
		// The send thread wakes within microseconds where it may take
		// real-time priority; a busy machine without it is allowed 50 ms
		// (sent early, it would leave 20 ms before due).
		if q.Status != schemas.StatusOK || !q.SentKernel || q.Sent < due || q.Sent > due+int64(50*time.Millisecond) {
			t.Fatalf("request %d due at %d: sent %+.3f ms from it (kernel %v, %s %q)", i, due, float64(q.Sent-due)/1e6, q.SentKernel, q.Status, q.Error)
		}
	}
}

// A request waiting on the send thread for a far deadline ends when it is
// cancelled: the transport closes the connection and the pending send is
// dropped, not written later to a closed (or reused) descriptor.
func TestDoAtCancelledWhileHeld(t *testing.T) {
	hits := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.Header.Get("Idempotency-Key")
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "m")
	c.Do(context.Background(), "warm", "p", 1, c.Clock.Now())
	<-hits
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := c.DoAt(ctx, "held", "p", 1, c.Clock.Now()+int64(time.Second))
	if el := time.Since(start); res.Request.Status == schemas.StatusOK || el > 500*time.Millisecond {
		t.Fatalf("held request: %s after %v", res.Request.Status, el)
	}
	time.Sleep(1200 * time.Millisecond) // past the deadline it was held for
	select {
	case id := <-hits:
		t.Fatalf("the server got %q after it was cancelled", id)
	default:
	}
}
