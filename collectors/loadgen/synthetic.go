package loadgen

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SyntheticModel is the model name the synthetic server reports; results
// from it are labelled synthetic and never pass for a real backend.
const SyntheticModel = "lem-synthetic"

// SyntheticConfig shapes the built-in synthetic OpenAI-compatible server.
type SyntheticConfig struct {
	MaxBatch      int           // sequences decoded together (16)
	StepBase      time.Duration // decode step time at batch 1 (8 ms)
	StepPerSeq    time.Duration // added per sequence in the batch (0.5 ms)
	PrefillPerTok time.Duration // prefill time per prompt token (20 µs)
}

func (c *SyntheticConfig) defaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 16
	}
	if c.StepBase <= 0 {
		c.StepBase = 8 * time.Millisecond
	}
	if c.StepPerSeq <= 0 {
		c.StepPerSeq = 500 * time.Microsecond
	}
	if c.PrefillPerTok <= 0 {
		c.PrefillPerTok = 20 * time.Microsecond
	}
}

// Synthetic is an OpenAI-compatible streaming server that simulates
// continuous batching: requests join a running batch, a prefill stalls the
// engine for a time proportional to the prompt, and every decode step emits
// one token to each running sequence. It is for demos and tests only.
type Synthetic struct {
	cfg     SyntheticConfig
	mu      sync.Mutex
	waiting []*seq
	running []*seq
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	// prefilling and active feed Load.
	prefilling atomic.Bool
	active     atomic.Int32
}

type seq struct {
	prompt, maxTokens int
	emitted           int
	out               chan int // token index, closed when done
	cancelled         atomic.Bool
}

// NewSynthetic starts the engine; Close stops it.
func NewSynthetic(cfg SyntheticConfig) *Synthetic {
	cfg.defaults()
	s := &Synthetic{cfg: cfg, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go s.engine()
	return s
}

// Close stops the engine.
func (s *Synthetic) Close() {
	close(s.stop)
	<-s.done
}

// Load returns the engine's utilisation in [0,1]: 1 while prefilling, else
// the fraction of the batch in use (a crude but monotone proxy of GPU work).
func (s *Synthetic) Load() float64 {
	if s.prefilling.Load() {
		return 1
	}
	n := float64(s.active.Load())
	if n == 0 {
		return 0
	}
	return 0.25 + 0.5*n/float64(s.cfg.MaxBatch)
}

func (s *Synthetic) engine() {
	defer close(s.done)
	for {
		s.mu.Lock()
		// Admit waiting sequences up to the batch size; prefill them.
		var admitted []*seq
		for len(s.waiting) > 0 && len(s.running)+len(admitted) < s.cfg.MaxBatch {
			admitted = append(admitted, s.waiting[0])
			s.waiting = s.waiting[1:]
		}
		s.mu.Unlock()
		if len(admitted) > 0 {
			var toks int
			for _, q := range admitted {
				toks += q.prompt
			}
			s.prefilling.Store(true)
			if !s.sleep(time.Duration(toks) * s.cfg.PrefillPerTok) {
				return
			}
			s.prefilling.Store(false)
			s.mu.Lock()
			s.running = append(s.running, admitted...)
			s.mu.Unlock()
		}
		s.mu.Lock()
		n := len(s.running)
		s.active.Store(int32(n))
		s.mu.Unlock()
		if n == 0 {
			select {
			case <-s.wake:
				continue
			case <-s.stop:
				return
			}
		}
		if !s.sleep(s.cfg.StepBase + time.Duration(n)*s.cfg.StepPerSeq) {
			return
		}
		s.mu.Lock()
		kept := s.running[:0]
		for _, q := range s.running {
			if q.cancelled.Load() {
				close(q.out)
				continue
			}
			q.out <- q.emitted
			q.emitted++
			if q.emitted >= q.maxTokens {
				close(q.out)
			} else {
				kept = append(kept, q)
			}
		}
		s.running = kept
		s.active.Store(int32(len(kept)))
		s.mu.Unlock()
	}
}

func (s *Synthetic) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

type completionRequest struct {
	Model         string                     `json:"model"`
	Prompt        json.RawMessage            `json:"prompt"`
	Messages      []struct{ Content string } `json:"messages"`
	MaxTokens     int                        `json:"max_tokens"`
	Stream        bool                       `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// ServeHTTP serves /v1/completions, /v1/chat/completions, /v1/models and
// /health.
func (s *Synthetic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
		w.Write([]byte(`{"status":"ok"}`))
		return
	case "/v1/models":
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model","owned_by":"lem (synthetic)"}]}`, SyntheticModel)
		return
	case "/v1/completions", "/v1/chat/completions":
	default:
		http.NotFound(w, r)
		return
	}
	chat := r.URL.Path == "/v1/chat/completions"
	var req completionRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad request body"}}`, http.StatusBadRequest)
		return
	}
	if req.MaxTokens <= 0 {
		req.MaxTokens = 16
	}
	prompt := promptTokens(req.Prompt)
	for _, m := range req.Messages {
		prompt += len(strings.Fields(m.Content)) + 4
	}
	q := &seq{prompt: max(prompt, 1), maxTokens: req.MaxTokens, out: make(chan int, req.MaxTokens)}
	s.mu.Lock()
	s.waiting = append(s.waiting, q)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Lem-Synthetic", "1")
	fl, _ := w.(http.Flusher)
	id := fmt.Sprintf("cmpl-syn-%d", time.Now().UnixNano())
	if chat {
		fmt.Fprintf(w, "data: {\"id\":%q,\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n", id, SyntheticModel)
		if fl != nil {
			fl.Flush()
		}
	}
	go func() {
		<-r.Context().Done()
		q.cancelled.Store(true)
	}()
	n := 0
	for range q.out {
		n++
		if chat {
			fmt.Fprintf(w, "data: {\"id\":%q,\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok\"}}]}\n\n", id, SyntheticModel)
		} else {
			fmt.Fprintf(w, "data: {\"id\":%q,\"object\":\"text_completion\",\"model\":%q,\"choices\":[{\"index\":0,\"text\":\" tok\"}]}\n\n", id, SyntheticModel)
		}
		if fl != nil {
			fl.Flush()
		}
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		fmt.Fprintf(w, "data: {\"id\":%q,\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
			id, SyntheticModel, q.prompt, n, q.prompt+n)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}

// promptTokens approximates the token count of a prompt: whitespace words,
// or the length of a token-id array.
func promptTokens(raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return len(strings.Fields(s))
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		return len(ids)
	}
	return 0
}
