// Package loadgen drives OpenAI-compatible streaming servers and stamps
// every chunk of every response: the client, arrival processes, a built-in
// synthetic server for demos, and the cycle runner that publishes request
// and token events.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

// Clock converts monotonic readings to wall time through one anchor taken
// at construction, so that stamps are immune to wall-clock steps during a
// run yet comparable with the collectors' host-clock timestamps.
type Clock struct {
	wall int64
	mono time.Time
}

// NewClock anchors a clock now.
func NewClock() Clock { t := time.Now(); return Clock{wall: t.UnixNano(), mono: t} }

// Now returns the current time in ns since the Unix epoch.
func (c Clock) Now() int64 { return c.wall + int64(time.Since(c.mono)) }

// Client streams completions. It is safe for concurrent use.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8000
	Model   string
	Chat    bool // use /v1/chat/completions
	HTTP    *http.Client
	Clock   Clock
	// Sampling is sent with every request (zero: greedy, temperature 0).
	Sampling Sampling
	// IgnoreEOS asks the server to generate exactly max_tokens (vLLM,
	// llama.cpp and SGLang honour it), so output lengths are controlled.
	IgnoreEOS bool
	// OnText, when set, receives each content chunk's text as it arrives
	// (for a live token display); it must not block.
	OnText func(id, text string)
}

// Sampling is the decoder configuration sent with each request.
type Sampling struct {
	Temperature float64 `yaml:"temperature"`
	TopP        float64 `yaml:"top_p"`
	TopK        int     `yaml:"top_k"`
	Seed        *int    `yaml:"seed"`
}

// SamplingPresets are named decoder configurations: deterministic is greedy
// decoding (reproducible outputs); standard, creative and factual follow
// common chat-assistant settings.
var SamplingPresets = map[string]Sampling{
	"deterministic": {Temperature: 0, TopP: 1},
	"standard":      {Temperature: 0.7, TopP: 0.9},
	"creative":      {Temperature: 1.0, TopP: 0.95, TopK: 50},
	"factual":       {Temperature: 0.2, TopP: 0.8, TopK: 10},
}

// NewClient returns a client built for many concurrent streams: no cap on
// connections per host, keep-alive, kernel receive and transmit stamps
// where the kernel gives them (docs/streaming.md).
func NewClient(baseURL, model string) *Client {
	if KernelStamps {
		holdKernelStamps()
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		// Each connection reads with the kernel's receive time where the
		// kernel gives it (Linux, SO_TIMESTAMPNS): a token is stamped when
		// its bytes reached the host, not when this process, perhaps busy
		// with a thousand other streams, got round to reading them.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil || !KernelStamps {
				return c, err
			}
			return kernelStamped(c), nil
		},
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 10000,
		MaxConnsPerHost:     0,
		IdleConnTimeout:     90 * time.Second,
		// Per connection, Go's defaults (4 KiB each way): SSE events are a
		// few hundred bytes and requests small (a long prompt is written
		// in pieces); 64 KiB each way held 128 MiB at 1,000 streams.
		DisableCompression: true,
	}
	return &Client{BaseURL: baseURL, Model: model, HTTP: &http.Client{Transport: tr}, Clock: NewClock(), IgnoreEOS: true}
}

// Chunk is one streamed chunk as received.
type Chunk struct {
	// TS is the kernel's receive time of the segment that completed the
	// chunk where the connection has it (Kernel), else when the line was
	// read, before parsing.
	TS     int64
	Tokens uint32
	Kernel bool
}

// clockSlack is how far a kernel receive time may lie after the client's
// own clock reading and still be taken.
const clockSlack = 5e6

// KernelStamps turns kernel receive stamps on for clients created after it
// is set (on by default; off, every chunk is stamped when it is read).
var KernelStamps = true

// kernelStamper is a connection that knows the kernel receive time of the
// latest data read from it, which read that was, and whether it ended at a
// line's end.
type kernelStamper interface {
	KernelStamp() (ts int64, read uint64, clean bool)
}

// maxLine is the longest stream line accepted. Lines are read through a
// 4 KiB buffer (pooled: a thousand streams hold 4 MiB, not 64) and
// gathered when longer.
const maxLine = 64 << 10

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// sendStamper is a connection that knows the kernel's transmit time of the
// last byte written to it.
type sendStamper interface{ SendStamp() int64 }

// Result is one finished request.
type Result struct {
	Request schemas.Request
	Chunks  []Chunk
	// UsageMismatch is set when the final usage report disagrees with the
	// tokens counted from chunks (the usage count wins).
	UsageMismatch bool
}

type streamChunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     uint32 `json:"prompt_tokens"`
		CompletionTokens uint32 `json:"completion_tokens"`
	} `json:"usage"`
	// Timings as llama.cpp's server (and lem's reference server) report
	// them with the last chunk.
	Timings *struct {
		QueueMS     float64 `json:"queue_ms"`
		PromptMS    float64 `json:"prompt_ms"`
		PredictedMS float64 `json:"predicted_ms"`
	} `json:"timings"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// Do sends one streaming request with the given prompt and output budget.
// scheduled is when the arrival process meant it to start. It never
// returns an error: failures are recorded in the result's status.
func (c *Client) Do(ctx context.Context, id string, prompt string, maxTokens int, scheduled int64) Result {
	return c.do(ctx, id, prompt, maxTokens, scheduled, false)
}

// DoAt is Do for a request called ahead of its deadline: the request is
// prepared and its connection taken now, and it leaves at scheduled. On a
// stamped connection the write itself waits for the deadline (in the
// transport's writer, right before the system call), so the hops between
// the arrival process and the wire no longer add their jitter; elsewhere
// it waits when the connection is obtained.
func (c *Client) DoAt(ctx context.Context, id string, prompt string, maxTokens int, scheduled int64) Result {
	return c.do(ctx, id, prompt, maxTokens, scheduled, true)
}

// writeHolder is a connection that can hold its next write until a
// deadline.
type writeHolder interface {
	HoldNextWrite(deadline int64, clk Clock)
}

func (c *Client) do(ctx context.Context, id string, prompt string, maxTokens int, scheduled int64, hold bool) Result {
	res := Result{Request: schemas.Request{ID: id, Scheduled: scheduled}}
	q := &res.Request
	body := map[string]any{
		"model": c.Model, "max_tokens": maxTokens, "stream": true, "temperature": c.Sampling.Temperature,
		"stream_options": map[string]any{"include_usage": true, "continuous_usage_stats": true},
	}
	if c.IgnoreEOS {
		body["ignore_eos"] = true
	}
	if c.Sampling.TopP > 0 {
		body["top_p"] = c.Sampling.TopP
	}
	if c.Sampling.TopK > 0 {
		body["top_k"] = c.Sampling.TopK
	}
	if c.Sampling.Seed != nil {
		body["seed"] = *c.Sampling.Seed
	}
	path := "/v1/completions"
	if c.Chat {
		path = "/v1/chat/completions"
		body["messages"] = []map[string]string{{"role": "user", "content": prompt}}
	} else {
		body["prompt"] = prompt
	}
	buf, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(buf))
	if err != nil {
		return fail(res, schemas.StatusError, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	// Servers (llama.cpp's among them) close idle keep-alive connections;
	// a POST on a connection found dead before anything was written is
	// retried by net/http only when marked idempotent. It is safe here: the
	// server never saw the request.
	req.Header.Set("Idempotency-Key", id)
	var ks kernelStamper
	var ss sendStamper
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		conn := info.Conn
		if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
			// TLS: the records are read from the stamped connection
			// below, one record per read, so the latest read's time is
			// that of the record that carried the line.
			conn = tc.NetConn()
		}
		ks, _ = conn.(kernelStamper)
		ss, _ = conn.(sendStamper)
		if hold {
			if h, ok := conn.(writeHolder); ok && conn == info.Conn {
				h.HoldNextWrite(scheduled, c.Clock)
				q.Sent = max(q.Sent, scheduled) // the transmit stamp, where there is one, says when
			} else {
				pace(ctx, c.Clock, scheduled, false)
				q.Sent = c.Clock.Now()
			}
		}
	}}))
	q.Sent = c.Clock.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fail(res, statusOf(ctx, err), err)
	}
	defer resp.Body.Close()
	if ss != nil {
		// The response began, so the request has left: the kernel's
		// transmit time of its last byte replaces the time it was handed
		// to the transport (which waits for a connection and for the
		// transport's writer goroutine to be scheduled).
		if tx := ss.SendStamp(); tx > 0 && tx >= q.Sent-clockSlack && tx <= c.Clock.Now()+clockSlack {
			q.Sent, q.SentKernel = tx, true
		}
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fail(res, schemas.StatusError, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg)))
	}
	br := readers.Get().(*bufio.Reader)
	br.Reset(resp.Body)
	defer readers.Put(br)
	var long []byte // a line longer than br's buffer, gathered
	var counted, lastUsage uint32
	var usageSeen bool
	var lastRead uint64
	exactChunk := -1 // the chunk stamped exact by read lastRead
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || long != nil {
			if len(long)+len(line) > maxLine {
				return fail(res, schemas.StatusError, fmt.Errorf("stream line longer than %d KiB", maxLine>>10))
			}
			long = append(long, line...)
			if err == bufio.ErrBufferFull {
				continue
			}
			line, long = long, nil
		}
		ts := c.Clock.Now() // stamp before parsing
		// The transport reads the connection on demand, so the latest read
		// is the one that carried this line's end. Its kernel time is
		// exact for the last line it completed (see stampConn): a line
		// read with others after it in the same read, or by a read that
		// went on into an unfinished line, keeps the kernel time as an
		// upper bound (it is later than the line's arrival, earlier than
		// the user-space stamp) but is not counted as kernel-stamped. A
		// stamp from before the request was sent belongs to an earlier
		// response on a reused connection and is not used.
		kernel := false
		trimmed := bytes.TrimSpace(line)
		if ks != nil && len(trimmed) > 0 {
			// The kernel stamps on CLOCK_REALTIME, ts is the anchored
			// monotonic clock: they may differ by a little (slew since the
			// anchor), never by much.
			k, read, clean := ks.KernelStamp()
			if k > q.Sent && k <= ts+clockSlack {
				ts, kernel = k, clean
			}
			if read == lastRead && exactChunk >= 0 {
				res.Chunks[exactChunk].Kernel = false
				q.KernelStamped--
			}
			lastRead, exactChunk = read, -1
		}
		if len(line) > 0 {
			if payload, ok := bytes.CutPrefix(trimmed, []byte("data:")); ok {
				payload = bytes.TrimSpace(payload)
				if bytes.Equal(payload, []byte("[DONE]")) {
					break
				}
				var ch streamChunk
				if jerr := json.Unmarshal(payload, &ch); jerr != nil {
					return fail(res, schemas.StatusError, fmt.Errorf("bad stream chunk: %w", jerr))
				}
				if ch.Error != nil {
					return fail(res, schemas.StatusError, fmt.Errorf("server error in stream: %s", ch.Error.Message))
				}
				if t := ch.Timings; t != nil {
					q.ServerQueue, q.ServerPrefill, q.ServerDecode = serverNS(t.QueueMS), serverNS(t.PromptMS), serverNS(t.PredictedMS)
				}
				content := false
				for _, ch := range ch.Choices {
					text := ch.Text + ch.Delta.Content + ch.Delta.ReasoningContent
					if text != "" {
						content = true
						if c.OnText != nil {
							c.OnText(id, text)
						}
					}
				}
				var n uint32
				if ch.Usage != nil {
					q.PromptTokens = ch.Usage.PromptTokens
					if content && ch.Usage.CompletionTokens >= lastUsage {
						// continuous usage stats: tokens in this chunk.
						n = ch.Usage.CompletionTokens - lastUsage
					}
					lastUsage = ch.Usage.CompletionTokens
					usageSeen = true
				}
				if content {
					if n == 0 {
						n = 1
					}
					if q.FirstToken == 0 {
						q.FirstToken = ts
					}
					q.LastToken = ts
					res.Chunks = append(res.Chunks, Chunk{TS: ts, Tokens: n, Kernel: kernel})
					if kernel {
						q.KernelStamped++
						exactChunk = len(res.Chunks) - 1
					}
					counted += n
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(res, statusOf(ctx, err), err)
		}
	}
	q.Done = c.Clock.Now()
	q.OutputTokens = counted
	if usageSeen {
		if lastUsage != counted {
			res.UsageMismatch = true
		}
		q.OutputTokens = lastUsage
	}
	q.Status = schemas.StatusOK
	return res
}

// serverNS converts a server-reported duration in ms to ns; a value that
// cannot be one (negative, not finite, over 11 days) is left unreported
// (0) rather than failing the validation of the whole request batch.
func serverNS(ms float64) int64 {
	if !(ms > 0) || ms > 1e9 {
		return 0
	}
	return int64(ms * 1e6)
}

func statusOf(ctx context.Context, err error) schemas.RequestStatus {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return schemas.StatusTimeout
	case errors.Is(ctx.Err(), context.Canceled):
		return schemas.StatusCancelled
	}
	return schemas.StatusError
}

func fail(res Result, st schemas.RequestStatus, err error) Result {
	res.Request.Status = st
	res.Request.Error = err.Error()
	return res
}
