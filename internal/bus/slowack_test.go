package bus

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/llm-energy-measure/lem/schemas"
)

// delayProxy forwards TCP connections to target, holding every chunk the
// server sends back by delay (latency, not a bandwidth limit): JetStream's
// publish acknowledgements arrive late, as from a busy server.
func delayProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() {
				defer wg.Done()
				type chunk struct {
					at time.Time
					b  []byte
				}
				q := make(chan chunk, 4096)
				go func() {
					for ch := range q {
						time.Sleep(time.Until(ch.at))
						if _, err := c.Write(ch.b); err != nil {
							break
						}
					}
					c.Close()
				}()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						q <- chunk{time.Now().Add(delay), append([]byte(nil), buf[:n]...)}
					}
					if err != nil {
						close(q)
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestPublisherBackPressureUnderSlowAcks: acknowledgements arriving 400 ms
// late, longer than nats.go's stall wait, with few allowed in flight. Every
// Publish must succeed (waiting instead of returning "stalled with too many
// outstanding async published messages") and every event must arrive.
func TestPublisherBackPressureUnderSlowAcks(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	direct, err := emb.Connect("setup")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	setup, err := NewPublisher(direct, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(context.Background(), setup.JetStream(), StreamConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	proxy := delayProxy(t, emb.Server.Addr().String(), 400*time.Millisecond)
	nc, err := nats.Connect("nats://"+proxy, nats.Name("slow"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := NewPublisher(nc, 4)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := 0; i < n; i++ {
		b := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "sim"}, Device: schemas.Device{UUID: "GPU-x"},
			Samples: []schemas.PowerSample{{TS: time.Now().UnixNano(), Power: 100_000}}}
		if err := pub.Publish(schemas.DeviceSubject(schemas.KindPower, "h", 0), fmt.Sprintf("p/%d", i), b); err != nil {
			t.Fatalf("publish %d of %d under slow acknowledgements: %v", i, n, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, setup.JetStream()); got != n {
		t.Fatalf("%d messages in the stream, want %d", got, n)
	}
	if pub.Stalls() == 0 {
		t.Fatal("the publisher never had to wait: the test did not exercise slow acknowledgements")
	}
	t.Logf("%d publishes waited for acknowledgements", pub.Stalls())
}
