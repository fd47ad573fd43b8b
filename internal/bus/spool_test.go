package bus

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/internal/spool"
	"github.com/llm-energy-measure/lem/schemas"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	s, err := js.Stream(context.Background(), EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestSpoolWhileNATSDown: the publisher spools while the server is down and
// drains once it returns; every event arrives once.
func TestSpoolWhileNATSDown(t *testing.T) {
	store, addr := t.TempDir(), freeAddr(t)
	srv, err := StartEmbedded(EmbeddedConfig{StoreDir: store, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+addr, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, _ := NewPublisher(nc, 0)
	if err := EnsureStreams(context.Background(), pub.JetStream(), StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	pub.UseSpool(sp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pub.Drain(ctx)

	ev := func(i int) *schemas.PowerBatch {
		return &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "sim"}, Device: schemas.Device{UUID: "u"},
			Samples: []schemas.PowerSample{{TS: int64(i), Power: 1}}}
	}
	for i := 0; i < 100; i++ {
		if err := pub.Publish(schemas.DeviceSubject(schemas.KindPower, "h", 0), fmt.Sprint("a", i), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	for nc.Status() == nats.CONNECTED {
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 200; i++ {
		if err := pub.Publish(schemas.DeviceSubject(schemas.KindPower, "h", 0), fmt.Sprint("b", i), ev(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, _ := sp.Stats(); n != 200 {
		t.Fatalf("spool holds %d, want 200", n)
	}
	srv, err = StartEmbedded(EmbeddedConfig{StoreDir: store, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _, _ := sp.Stats(); n == 0 && nc.Status() == nats.CONNECTED && streamMsgs(t, pub.JetStream()) == 300 {
			break
		}
		if time.Now().After(deadline) {
			n, _, _ := sp.Stats()
			t.Fatalf("not drained: spool %d, stream %d", n, streamMsgs(t, pub.JetStream()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
