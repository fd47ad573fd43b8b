package clickhouse_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/fence"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

func TestMain(m *testing.M) {
	if os.Getenv("LEM_FENCE_CHILD") != "" {
		os.Exit(fenceChild())
	}
	os.Exit(testenv.Main(m))
}

// fenceRows is the block the child inserts: random numbers, so that it
// does not compress and its sending takes many writes.
const fenceRows = 1 << 18

// fenceChild inserts one block of power samples into LEM_FENCE_DB at
// LEM_FENCE_ADDR, fenced (LEM_FENCE_LIMIT_MS after its start) unless
// LEM_FENCE_LIMIT_MS is 0, and reports the insert's outcome on stdout.
func fenceChild() int {
	ctx := context.Background()
	st, err := chstore.Open(ctx, chstore.Config{Addr: os.Getenv("LEM_FENCE_ADDR"), Database: os.Getenv("LEM_FENCE_DB")}, false, zerolog.Nop())
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	defer st.Close()
	rows := schemas.NewRows(schemas.KindPower)
	rng := rand.New(rand.NewPCG(1, 2))
	pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: schemas.SourceNVMLBuffer}, Device: schemas.Device{UUID: "GPU-f"}}
	for i := 0; i < fenceRows; i++ {
		pb.Samples = append(pb.Samples, schemas.PowerSample{TS: rng.Int64(), Power: schemas.Power(rng.Int64())})
	}
	rows.Append(pb, schemas.Position{Epoch: 1, Seq: 1})
	if ms, _ := strconv.Atoi(os.Getenv("LEM_FENCE_LIMIT_MS")); ms > 0 {
		limit := time.Now().Add(time.Duration(ms) * time.Millisecond)
		ctx = fence.With(ctx, func() time.Time { return limit })
	}
	fmt.Println("insert:", st.Write(ctx, rows.Table()))
	return 0
}

// A writer frozen (SIGSTOP) in the middle of sending an insert, and
// thawed after its lease's limit, must not complete the insert (ADR
// 0019): its connection checks the limit before every chunk, closes, and
// the server drops the unfinished insert. Unfenced, the same freeze
// completes the insert once thawed (the defect ADR 0017 saw: that block
// stored twice once the lease's next holder had stored it too).
func TestFencedInsertFrozenPastItsLimit(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	addr := testenv.ClickHouse(t)
	for _, c := range []struct {
		name    string
		limitMS int
		want    uint64
	}{{"fenced", 3000, 0}, {"unfenced", 0, fenceRows}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			if err := conn.Exec(ctx, "TRUNCATE TABLE "+db+"."+schemas.TablePower); err != nil {
				t.Fatal(err)
			}
			// The child talks to the server through a counting relay, so
			// that the test sees when the insert's data is flowing.
			var sent atomic.Int64
			relay := relayTo(t, addr, &sent)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "LEM_FENCE_CHILD=1", "LEM_FENCE_ADDR="+relay, "LEM_FENCE_DB="+db,
				"LEM_FENCE_LIMIT_MS="+strconv.Itoa(c.limitMS))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			// Freeze it once 512 KiB of the block (about 4 MiB) has passed.
			for sent.Load() < 512<<10 {
				if time.Since(start) > 60*time.Second {
					cmd.Process.Kill()
					t.Fatalf("the child sent %d bytes in 60 s", sent.Load())
				}
				time.Sleep(time.Millisecond)
			}
			if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			frozenAt := sent.Load()
			time.Sleep(time.Until(start.Add(time.Duration(max(c.limitMS, 3000))*time.Millisecond + time.Second)))
			if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			hung := time.AfterFunc(60*time.Second, func() { cmd.Process.Signal(syscall.SIGQUIT) }) // its stacks, to stderr
			report, _ := io.ReadAll(out)
			hung.Stop()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v: %s", err, report)
			}
			t.Logf("frozen after %d bytes through the relay (%d in all); child said %s", frozenAt, sent.Load(), report)
			if frozenAt >= sent.Load() && c.want > 0 {
				t.Fatalf("the whole insert had passed before the freeze: the test proves nothing")
			}
			var n uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+schemas.TablePower).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != c.want {
				t.Fatalf("%d rows stored after the thaw, want %d (child: %s)", n, c.want, report)
			}
			// Nothing stored because of the fence, not of some other error.
			if c.limitMS > 0 && !strings.Contains(string(report), "fence:") {
				t.Fatalf("the fenced insert failed without the fence saying so: %s", report)
			}
		})
	}
}

// relayTo relays connections to addr, counting the bytes sent to it.
func relayTo(t *testing.T, addr string, sent *atomic.Int64) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(c, s); c.Close() }()
			go func() { io.Copy(countingWriter{s, sent}, c); s.Close() }()
		}
	}()
	return l.Addr().String()
}

type countingWriter struct {
	io.Writer
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	k, err := w.Writer.Write(p)
	w.n.Add(int64(k))
	return k, err
}
