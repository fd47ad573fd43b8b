//go:build linux

package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A chunk is stamped when its bytes reached the host, not when the client
// got round to reading them: the server sends pairs of chunks 5 ms apart;
// the client is busy for 20 ms after the first of each pair (as a client
// serving a thousand streams is), so it reads the second ~15 ms after it
// arrived. Its kernel stamp lies within the server's write of it; the
// time the client read it (what user-space stamping gave) is late.
func TestKernelStampsIgnoreClientDelay(t *testing.T) {
	const pairs = 10
	type bracket struct{ before, after int64 }
	written := make([]bracket, 2*pairs)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for k := 0; k < 2*pairs; k++ {
			b := time.Now().UnixNano()
			fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"%c\"}]}\n\n", 'a'+k%26)
			fl.Flush()
			written[k] = bracket{b, time.Now().UnixNano()}
			if k%2 == 0 {
				time.Sleep(5 * time.Millisecond)
			} else {
				time.Sleep(60 * time.Millisecond)
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
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
			time.Sleep(20 * time.Millisecond) // busy with other streams
		}
	}
	res := c.Do(context.Background(), "r", "hi", 2*pairs, time.Now().UnixNano())
	if res.Request.Error != "" || len(res.Chunks) != 2*pairs {
		t.Fatalf("%d chunks, %q", len(res.Chunks), res.Request.Error)
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
	// On a busy machine the server's own 5 ms pause overshoots and some
	// pairs lose the delay; the test must still show it for some.
	if lateRead < 8e6 {
		t.Errorf("the client read no delayed chunk more than %.1f ms after the server wrote it: the test no longer shows the delay", float64(lateRead)/1e6)
	}
	t.Logf("kernel stamps within %.3f ms of the server's writes; the client read a delayed chunk up to %.1f ms late", float64(worst)/1e6, float64(lateRead)/1e6)
}

// The first data on a fresh connection carries a kernel stamp: the kernel
// turns packet stamping on lazily when the first stamping socket appears
// and off when the last closes, and a client keeps it on. Without that,
// 31 of 200 first reads on fresh connections came unstamped here.
func TestFirstReadOfFreshConnectionKernelStamped(t *testing.T) {
	NewClient("http://127.0.0.1:1", "m") // what every run does first
	for i := 0; i < 100; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		sc, ok := kernelStamped(c).(*stampConn)
		if !ok {
			t.Fatal("kernel stamps refused on a loopback TCP connection")
		}
		before := time.Now().UnixNano()
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := sc.Read(b); err != nil {
			t.Fatal(err)
		}
		if k := sc.KernelStamp(); k < before || k > time.Now().UnixNano() {
			t.Fatalf("connection %d: first read stamped %d, written at %d", i, k, before)
		}
		c.Close()
		s.Close()
		ln.Close()
	}
}
