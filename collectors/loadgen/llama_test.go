package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
	"github.com/llm-energy-measure/lem/internal/pacedserver"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the paced SSE server of
	// BenchmarkTimestampAccuracySeparateServer, in its own process.
	if os.Getenv(pacedserver.EnvAddrFile) != "" {
		os.Exit(pacedserver.Main())
	}
	os.Exit(testenv.Main(m))
}

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
		OutputTokens: 16, PromptTokens: 32}
	r := NewRunner(cfg, NewClient(url, "tiny"), rec)
	if err := runCycles(r); err != nil {
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

// llama-server's own view comes back with the stream (timings), its
// tokenizer makes synthetic prompts exactly as long as asked, and its
// /metrics is scraped into samples.
func TestServerSideTruthFromLlamaServer(t *testing.T) {
	url := testenv.LlamaServer(t)
	ctx := context.Background()
	tok := &HTTPTokenizer{BaseURL: url, Model: "tiny"}
	ds := Dataset{Kind: "synthetic", PromptTokens: Dist{Dist: "uniform", Min: 40, Max: 200}, OutputTokens: Dist{Mean: 12}}
	ps, err := ds.Load(ctx, 6, rand.New(rand.NewPCG(1, 2)), tok)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(url, "tiny")
	for i, p := range ps {
		if !p.Exact {
			t.Fatalf("prompt %d: length not counted by the server", i)
		}
		res := c.Do(ctx, fmt.Sprint(i), p.Text, p.MaxTokens, c.Clock.Now())
		q := res.Request
		if q.Status != schemas.StatusOK {
			t.Fatal(q.Error)
		}
		// The usage report counts the prompt as the tokenizer did (plus a
		// BOS token the server may add).
		if d := int(q.PromptTokens) - p.Tokens; d < 0 || d > 1 {
			t.Errorf("prompt %d: built for %d tokens, server counted %d", i, p.Tokens, q.PromptTokens)
		}
		if q.ServerPrefill <= 0 || q.ServerDecode <= 0 {
			t.Errorf("prompt %d: no server timings (%d, %d)", i, q.ServerPrefill, q.ServerDecode)
		}
		// The server's decode time fits inside the client's first-to-last
		// token span plus one token's worth.
		if span := q.Done - q.FirstToken; q.ServerDecode > span+int64(50*time.Millisecond) {
			t.Errorf("prompt %d: server decode %v beyond client span %v", i, time.Duration(q.ServerDecode), time.Duration(span))
		}
	}
	sc := &Scraper{URL: url + "/metrics", RunID: "r", Clock: NewClock()}
	b, err := sc.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]float64{}
	for _, s := range b.Samples {
		names[s.Name] = s.Value
	}
	if v, ok := names["llamacpp:tokens_predicted_total"]; !ok || v < 12 {
		t.Fatalf("scraped %d samples, tokens_predicted_total %v", len(b.Samples), v)
	}
	if err := b.Validate(0, 1<<62); err != nil {
		t.Fatal(err)
	}
}

// llama.cpp reports its model's parameters in /v1/models: lem reads them
// as the count of the model's weights (the tiny model's shape is in its
// name: embedding 256, 4 layers, 4 heads, feed-forward 688).
func TestLlamaServerParameters(t *testing.T) {
	url := testenv.LlamaServer(t)
	n, src, warn := backend.ModelParameters(context.Background(), &backend.Config{Kind: backend.External, Endpoint: url, Model: "tiny"})
	resp, err := http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			Meta struct {
				NVocab float64 `json:"n_vocab"`
			} `json:"meta"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Data) != 1 {
		t.Fatalf("/v1/models: %v %+v", err, list)
	}
	const e, layers, ff = 256, 4, 688
	v := list.Data[0].Meta.NVocab
	// token embedding and output head, per layer q/k/v/o, gate/up/down and
	// two norms, and the final norm
	want := 2*v*e + layers*(4*e*e+3*e*ff+2*e) + e
	if n != want || !strings.Contains(src, "/v1/models") || warn != "" {
		t.Errorf("%v parameters from %q (warn %q); the model's shape gives %v", n, src, warn, want)
	}
}
