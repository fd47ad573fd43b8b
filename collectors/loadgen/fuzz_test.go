package loadgen

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

// The file parsers a user points lem at (trace, JSONL and ShareGPT
// datasets) take any bytes: an error or a valid result, never a panic, and
// nothing out of range accepted.
func FuzzTrace(f *testing.F) {
	f.Add([]byte("0.5\n1.25\n{\"t\": 2}\n# c\n"))
	f.Add([]byte("{\"timestamp\": 1e308}\n-1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := parseTrace(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		for i, v := range ts {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || (i > 0 && v < ts[i-1]) {
				t.Fatalf("offset %d: %v", i, v)
			}
		}
	})
}

func FuzzJSONL(f *testing.F) {
	f.Add([]byte("{\"prompt\": \"a\", \"max_tokens\": 3}\n{\"prompt\": \"b\"}\n"))
	f.Add([]byte("{\"prompt\": null}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parseJSONL(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		if len(ps) == 0 {
			t.Fatal("no prompts and no error")
		}
		for _, p := range ps {
			if p.MaxTokens < 0 {
				t.Fatalf("%+v", p)
			}
		}
	})
}

func FuzzShareGPT(f *testing.F) {
	f.Add([]byte(`[{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := parseShareGPT(b, "fuzz")
		if err == nil && len(cs) == 0 {
			t.Fatal("no turns and no error")
		}
	})
}

// The streaming response of a server is untrusted input too: whatever the
// bytes, Do ends with a result, never a panic, and what it reports is
// consistent (chunks in time order, each of at least one token, first and
// last token stamps bracketing them, an error for anything unparseable).
func FuzzStream(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"timings\":{\"prompt_ms\":1.5,\"predicted_ms\":-3}}\n"))
	f.Add([]byte("data: {\"error\":{\"message\":\"boom\"}}\n"))
	f.Add([]byte("data: {not json\n"))
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(*body.Load())
	}))
	f.Cleanup(srv.Close)
	c := NewClient(srv.URL, "m")
	f.Fuzz(func(t *testing.T, b []byte) {
		body.Store(&b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res := c.Do(ctx, "fuzz", "p", 8, c.Clock.Now())
		q := res.Request
		// Tokens the server counted but never sent as text are kept, and
		// flagged.
		if q.Status == schemas.StatusOK && len(res.Chunks) == 0 && q.OutputTokens != 0 && !res.UsageMismatch {
			t.Fatalf("ok with %d tokens, no chunks and no mismatch flag", q.OutputTokens)
		}
		// What the server reports must not make the request batch invalid
		// (one bad request would dead-letter the batch it travels in).
		batch := schemas.RequestBatch{RunID: "r", Requests: []schemas.Request{q}}
		batch.Requests[0].ID, batch.Requests[0].Scheduled = "q", max(q.Scheduled, 1)
		if err := batch.Validate(0, 1<<62); err != nil {
			t.Fatalf("the request fails validation: %v (%+v)", err, q)
		}
		for i, ch := range res.Chunks {
			if ch.Tokens == 0 || (i > 0 && ch.TS < res.Chunks[i-1].TS) {
				t.Fatalf("chunk %d: %+v", i, ch)
			}
		}
		if len(res.Chunks) > 0 && (q.FirstToken != res.Chunks[0].TS || q.LastToken != res.Chunks[len(res.Chunks)-1].TS) {
			t.Fatalf("first/last token %d/%d, chunks %+v", q.FirstToken, q.LastToken, res.Chunks)
		}
		if bytes.HasPrefix(b, []byte("data: {not json\n")) && q.Status == schemas.StatusOK {
			t.Fatalf("unparseable chunk accepted: %+v", q)
		}
	})
}
