// Package testenv starts the real servers that tests need: a throwaway
// clickhouse-server on free ports and an embedded JetStream server, each
// with a temporary directory.
//
// Gating follows the tri-state LEM_E2E variable: unset, a missing
// clickhouse-server skips the test; LEM_E2E=1 (set by `make test` and CI)
// makes it a failure; LEM_E2E=0 skips tests that need external servers.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/chserver"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

var (
	chOnce   sync.Once
	chServer *chserver.Server
	chErr    error
	dbSeq    atomic.Int64
)

// ClickHouse returns the address of a clickhouse-server shared by the
// tests of this package, starting it on first use. Call Shutdown from
// TestMain to stop it.
func ClickHouse(t testing.TB) string {
	t.Helper()
	switch os.Getenv("LEM_E2E") {
	case "0":
		t.Skip("LEM_E2E=0: tests needing clickhouse-server are off")
	}
	chOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lem-clickhouse-")
		if err != nil {
			chErr = err
			return
		}
		chServer, chErr = chserver.Start(context.Background(), chserver.Options{Dir: dir})
	})
	if chErr != nil {
		if errors.Is(chErr, chserver.ErrNotInstalled) && os.Getenv("LEM_E2E") != "1" {
			t.Skipf("skipping: %v (LEM_E2E=1 makes this a failure)", chErr)
		}
		t.Fatalf("clickhouse-server: %v", chErr)
	}
	return chServer.Addr()
}

// ClickHouseServer returns the shared server (after ClickHouse was called).
func ClickHouseServer() *chserver.Server { return chServer }

// Shutdown stops servers started by this package; call it from TestMain.
func Shutdown() {
	stopLlama()
	if chServer != nil {
		chServer.Stop()
		os.RemoveAll(chServer.Dir)
	}
}

// Main is a TestMain that stops the servers after the tests.
func Main(m interface{ Run() int }) int {
	code := m.Run()
	Shutdown()
	return code
}

// FreshDatabase returns a new, migrated database name on the shared server
// and a connection to it, closed at the end of the test.
func FreshDatabase(t testing.TB) (string, driver.Conn) {
	t.Helper()
	addr := ClickHouse(t)
	ctx := context.Background()
	conn, err := chstore.Connect(ctx, chstore.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	db := fmt.Sprintf("lemtest_%d_%d", os.Getpid(), dbSeq.Add(1))
	if _, err := chstore.Migrate(ctx, conn, db, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		conn.Close()
	})
	return db, conn
}

// JetStream starts an embedded JetStream server with the event streams
// and returns a connection and context, all stopped at test end.
func JetStream(t testing.TB) (*bus.Embedded, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := e.Connect("test")
	if err != nil {
		e.Shutdown()
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		e.Shutdown()
	})
	return e, nc, js
}
