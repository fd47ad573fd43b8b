package loadgen

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// Against llama.cpp's real server: one chunk may carry several tokens, so
// the usage report is the truth; the client must agree with it and stamp
// every chunk in order.
func TestClientAgainstLlamaServer(t *testing.T) {
	url := testenv.LlamaServer(t)
	for _, chat := range []bool{false, true} {
		c := NewClient(url, "tiny")
		c.Chat = chat
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res := c.Do(ctx, "q", "hello world, this is a test prompt", 24, c.Clock.Now())
		cancel()
		q := res.Request
		if q.Status != schemas.StatusOK {
			t.Fatalf("chat=%v: %s", chat, q.Error)
		}
		if q.OutputTokens != 24 || q.PromptTokens == 0 {
			t.Fatalf("chat=%v: usage %d prompt / %d output tokens, want 24 output", chat, q.PromptTokens, q.OutputTokens)
		}
		var sum uint32
		prev := q.Sent
		for _, ch := range res.Chunks {
			if ch.TS < prev {
				t.Fatalf("chunk stamps go backwards")
			}
			prev = ch.TS
			sum += ch.Tokens
		}
		if len(res.Chunks) == 0 || q.FirstToken <= q.Sent || q.LastToken < q.FirstToken || q.Done < q.LastToken {
			t.Fatalf("chat=%v: stamps %+v, %d chunks", chat, q, len(res.Chunks))
		}
		// Chunks counted one token each unless the server reports
		// per-chunk usage; a disagreement with the final usage is flagged.
		if (sum != q.OutputTokens) != res.UsageMismatch {
			t.Fatalf("chat=%v: chunks carry %d tokens, usage %d, mismatch flag %v", chat, sum, q.OutputTokens, res.UsageMismatch)
		}
	}
}

func TestRunnerAgainstLlamaServer(t *testing.T) {
	url := testenv.LlamaServer(t)
	rec := &recorder{}
	cfg := RunConfig{RunID: "llama", Backend: "llama.cpp", Model: "tiny", Cycles: 2, RequestsPerCycle: 8, Concurrency: 4,
		OutputTokens: 16, PromptTokens: 32, Baseline: 100 * time.Millisecond}
	r := NewRunner(cfg, NewClient(url, "tiny"), rec)
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ok, tokens int
	for _, ev := range rec.events {
		if b, isReq := ev.(*schemas.RequestBatch); isReq {
			for _, q := range b.Requests {
				if q.Status == schemas.StatusOK && q.OutputTokens == 16 {
					ok++
				} else {
					t.Logf("request %s: status %s, %d output tokens, error %q", q.ID, q.Status, q.OutputTokens, q.Error)
				}
			}
		}
		if b, isTok := ev.(*schemas.TokenBatch); isTok {
			tokens += len(b.Tokens)
		}
	}
	if ok != 16 || tokens == 0 {
		t.Fatalf("%d successful requests of 16 tokens (want 16), %d chunk events", ok, tokens)
	}
}
