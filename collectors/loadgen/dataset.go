package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
)

// Dist is a distribution of token counts.
type Dist struct {
	Dist string  `yaml:"dist"` // fixed (default), uniform, normal, lognormal
	Mean float64 `yaml:"mean"`
	Std  float64 `yaml:"std"`
	Min  int     `yaml:"min"`
	Max  int     `yaml:"max"`
}

// Validate names the wrong field of d, reported under param.
func (d Dist) Validate(param string) error {
	switch d.Dist {
	case "", "fixed":
		if d.Mean < 1 {
			return fmt.Errorf("%s.mean: must be at least 1 token", param)
		}
	case "uniform":
		if d.Min < 1 || d.Max < d.Min {
			return fmt.Errorf("%s: uniform needs 1 ≤ min ≤ max", param)
		}
	case "normal", "lognormal":
		if d.Mean < 1 || d.Std < 0 {
			return fmt.Errorf("%s: %s needs mean ≥ 1 and std ≥ 0", param, d.Dist)
		}
	default:
		return fmt.Errorf("%s.dist: unknown %q (fixed, uniform, normal or lognormal)", param, d.Dist)
	}
	if d.Max > 0 && d.Min > d.Max {
		return fmt.Errorf("%s: min %d above max %d", param, d.Min, d.Max)
	}
	return nil
}

// Draw returns one token count, clipped to [max(Min,1), Max].
func (d Dist) Draw(rng *rand.Rand) int {
	var v float64
	switch d.Dist {
	case "uniform":
		v = float64(d.Min + rng.IntN(d.Max-d.Min+1))
	case "normal":
		v = d.Mean + d.Std*rng.NormFloat64()
	case "lognormal":
		// Parameters from the mean and std of the distribution itself.
		s2 := math.Log(1 + d.Std*d.Std/(d.Mean*d.Mean))
		v = math.Exp(math.Log(d.Mean) - s2/2 + math.Sqrt(s2)*rng.NormFloat64())
	default:
		v = d.Mean
	}
	n := int(math.Round(v))
	n = max(n, d.Min, 1)
	if d.Max > 0 {
		n = min(n, d.Max)
	}
	return n
}

// Dataset is where prompts come from.
type Dataset struct {
	Kind         string `yaml:"kind"` // synthetic (default), sharegpt, jsonl
	Path         string `yaml:"path"`
	PromptTokens Dist   `yaml:"prompt_tokens"`
	OutputTokens Dist   `yaml:"output_tokens"`
}

// Validate names the first wrong field.
func (d Dataset) Validate() error {
	switch d.Kind {
	case "", "synthetic":
		if err := d.PromptTokens.Validate("dataset.prompt_tokens"); err != nil {
			return err
		}
	case "sharegpt", "jsonl":
		if d.Path == "" {
			return fmt.Errorf("dataset.path: %s needs a file", d.Kind)
		}
	default:
		return fmt.Errorf("dataset.kind: unknown %q (synthetic, sharegpt or jsonl)", d.Kind)
	}
	return d.OutputTokens.Validate("dataset.output_tokens")
}

// Prompt is one request's input.
type Prompt struct {
	Text string
	// Tokens is the prompt's length in the server's tokenizer when it has
	// a tokenize endpoint, else an estimate (Exact false).
	Tokens    int
	Exact     bool
	MaxTokens int
}

// Tokenizer counts tokens as the server does.
type Tokenizer interface {
	Count(ctx context.Context, text string) (int, error)
}

// ErrNoTokenizer is returned when the server has no tokenize endpoint.
var ErrNoTokenizer = errors.New("server has no tokenize endpoint")

// HTTPTokenizer asks the server's /tokenize: llama.cpp's and lem's
// reference server's {"content": …}, vLLM's and SGLang's {"model": …,
// "prompt": …}; either answers {"tokens": […]} (vLLM also "count").
type HTTPTokenizer struct {
	BaseURL, Model string
	HTTP           *http.Client
}

func (t *HTTPTokenizer) Count(ctx context.Context, text string) (int, error) {
	// add_special (llama.cpp) and add_special_tokens (vLLM): count as the
	// completion endpoint will, with a BOS token where the model has one.
	body, _ := json.Marshal(map[string]any{"content": text, "prompt": text, "model": t.Model, "add_special": true, "add_special_tokens": true})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(t.BaseURL, "/")+"/tokenize", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := t.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return 0, ErrNoTokenizer
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("tokenize: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	var out struct {
		Tokens []json.RawMessage `json:"tokens"`
		Count  *int              `json:"count"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("tokenize: %w", err)
	}
	if out.Count != nil {
		return *out.Count, nil
	}
	return len(out.Tokens), nil
}

// words is the vocabulary of synthetic prompts: common English words, so
// that every tokenizer sees ordinary text.
var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so what no more out up said about other into
time only could new some these two may first then do any like my now over such our man me even most made after also did
many before must through back years where much your way well down should because each just those people how too little state
good very make world still own see men work long get here between both life being under never day same another know while
last might us great old year off come since against go came right used take three energy power model token batch request`)

// Load returns n prompts. A synthetic prompt is built to the drawn length
// exactly when tok counts tokens (tok nil or ErrNoTokenizer: about 0.75
// words per token, marked inexact); file datasets are sampled with
// replacement in a seeded order.
func (d Dataset) Load(ctx context.Context, n int, rng *rand.Rand, tok Tokenizer) ([]Prompt, error) {
	out := make([]Prompt, 0, n)
	switch d.Kind {
	case "", "synthetic":
		sb := &synthBuilder{rng: rng, tok: tok, ctx: ctx}
		for i := 0; i < n; i++ {
			p, err := sb.build(d.PromptTokens.Draw(rng))
			if err != nil {
				return nil, err
			}
			p.MaxTokens = d.OutputTokens.Draw(rng)
			out = append(out, p)
		}
		return out, nil
	case "sharegpt":
		all, err := readShareGPT(d.Path)
		if err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			c := all[rng.IntN(len(all))]
			p := Prompt{Text: c[0], Tokens: estimateTokens(c[0])}
			// The reference reply's length sets the output budget.
			p.MaxTokens = estimateTokens(c[1])
			if tok != nil {
				if k, err := tok.Count(ctx, c[1]); err == nil {
					p.MaxTokens = k
				}
				if k, err := tok.Count(ctx, c[0]); err == nil {
					p.Tokens, p.Exact = k, true
				}
			}
			p.MaxTokens = max(p.MaxTokens, d.OutputTokens.Min, 1)
			if d.OutputTokens.Max > 0 {
				p.MaxTokens = min(p.MaxTokens, d.OutputTokens.Max)
			}
			out = append(out, p)
		}
		return out, nil
	case "jsonl":
		all, err := readJSONL(d.Path)
		if err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			p := all[rng.IntN(len(all))]
			if p.MaxTokens == 0 {
				p.MaxTokens = d.OutputTokens.Draw(rng)
			}
			p.Tokens = estimateTokens(p.Text)
			if tok != nil {
				if k, err := tok.Count(ctx, p.Text); err == nil {
					p.Tokens, p.Exact = k, true
				}
			}
			out = append(out, p)
		}
		return out, nil
	}
	return nil, d.Validate()
}

func estimateTokens(s string) int {
	return max(1, int(math.Round(float64(len(strings.Fields(s)))*4/3)))
}

type synthBuilder struct {
	rng      *rand.Rand
	tok      Tokenizer
	ctx      context.Context
	noTok    bool
	perWord  float64 // tokens per word, learned
	calibrat bool
}

func (b *synthBuilder) text(nw int) string {
	ws := make([]string, nw)
	for i := range ws {
		ws[i] = words[b.rng.IntN(len(words))]
	}
	return strings.Join(ws, " ")
}

// build makes a prompt of exactly target tokens when the server can count
// them: a binary search for the most words that stay within the target
// (from a guess at the learned tokens-per-word ratio), then short filler
// words appended one at a time to close the last few tokens.
func (b *synthBuilder) build(target int) (Prompt, error) {
	if b.perWord == 0 {
		b.perWord = 4.0 / 3
	}
	guess := max(1, int(math.Round(float64(target)/b.perWord)))
	if b.tok == nil || b.noTok {
		return Prompt{Text: b.text(guess), Tokens: target}, nil
	}
	ws := strings.Fields(b.text(2*guess + 8))
	count := func(n int) (int, error) {
		k, err := b.tok.Count(b.ctx, strings.Join(ws[:n], " "))
		if errors.Is(err, ErrNoTokenizer) {
			b.noTok = true
		}
		return k, err
	}
	k, err := count(min(guess, len(ws)))
	if b.noTok {
		return Prompt{Text: strings.Join(ws[:min(guess, len(ws))], " "), Tokens: target}, nil
	}
	if err != nil {
		return Prompt{}, err
	}
	// lo: most words known to stay within the target; hi: fewest known
	// to exceed it.
	lo, hi, klo := 0, len(ws)+1, 0
	if k <= target {
		lo, klo = min(guess, len(ws)), k
	} else {
		hi = guess
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if mid > len(ws) {
			break
		}
		k, err := count(mid)
		if err != nil {
			return Prompt{}, err
		}
		if k <= target {
			lo, klo = mid, k
		} else {
			hi = mid
		}
	}
	if lo > 0 {
		b.perWord = 0.8*b.perWord + 0.2*float64(klo)/float64(lo)
	}
	text := strings.Join(ws[:lo], " ")
	// A filler that fits is used again; one that overshoots is dropped
	// for the next.
	for f := 0; klo < target && f < len(fillers); {
		cand := strings.TrimSpace(text + " " + fillers[f])
		k, err := b.tok.Count(b.ctx, cand)
		if err != nil {
			return Prompt{}, err
		}
		if k <= target && k > klo {
			text, klo = cand, k
		} else {
			f++
		}
	}
	return Prompt{Text: text, Tokens: klo, Exact: true}, nil
}

// fillers are short words that most tokenizers count as one token.
var fillers = []string{"a", "I", "x", "of", "to", "in", "it", "is"}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// readShareGPT reads a ShareGPT-style JSON file: a list of conversations,
// each {"conversations": [{"from": "human", "value": …}, {"from": "gpt",
// "value": …}, …]}; it keeps the first human turn and the reply to it.
func readShareGPT(path string) ([][2]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataset.path: %w", err)
	}
	return parseShareGPT(b, path)
}

func parseShareGPT(b []byte, path string) ([][2]string, error) {
	var convs []struct {
		Conversations []struct {
			From  string `json:"from"`
			Value string `json:"value"`
		} `json:"conversations"`
	}
	if err := json.Unmarshal(b, &convs); err != nil {
		return nil, fmt.Errorf("dataset.path: %s is not ShareGPT JSON: %w", path, err)
	}
	var out [][2]string
	for _, c := range convs {
		for i := 0; i+1 < len(c.Conversations); i++ {
			h, g := c.Conversations[i], c.Conversations[i+1]
			if (h.From == "human" || h.From == "user") && (g.From == "gpt" || g.From == "assistant") && strings.TrimSpace(h.Value) != "" {
				out = append(out, [2]string{h.Value, g.Value})
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dataset.path: %s has no human→gpt turn", path)
	}
	return out, nil
}

// readJSONL reads one {"prompt": …, "max_tokens"|"output_tokens": N} per line.
func readJSONL(path string) ([]Prompt, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dataset.path: %w", err)
	}
	defer f.Close()
	return parseJSONL(f, path)
}

func parseJSONL(r io.Reader, path string) ([]Prompt, error) {
	var out []Prompt
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		s := bytes.TrimSpace(sc.Bytes())
		if len(s) == 0 {
			continue
		}
		var rec struct {
			Prompt       *string `json:"prompt"`
			MaxTokens    int     `json:"max_tokens"`
			OutputTokens int     `json:"output_tokens"`
		}
		if err := json.Unmarshal(s, &rec); err != nil || rec.Prompt == nil {
			return nil, fmt.Errorf("dataset.path: %s line %d: want {\"prompt\": …}", path, line)
		}
		if rec.MaxTokens < 0 || rec.OutputTokens < 0 {
			return nil, fmt.Errorf("dataset.path: %s line %d: negative token count", path, line)
		}
		out = append(out, Prompt{Text: *rec.Prompt, MaxTokens: max(rec.MaxTokens, rec.OutputTokens)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dataset.path: %s has no prompts", path)
	}
	return out, nil
}
