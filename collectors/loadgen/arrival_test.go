package loadgen

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/internal/gof"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Poisson schedules pass a KS test against the exponential; constant ones
// do not; gamma gaps have the asked coefficient of variation.
func TestArrivalSchedules(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	n := 20000
	p, _ := Arrival{Process: ArrivalPoisson, Rate: 500}.Schedule(n, rng)
	// Critical value at α = 0.01 for the n−1 gaps.
	if ks := gof.KSExponential(p, 500); ks > gof.Critical1(n-1) {
		t.Errorf("poisson KS %.4f", ks)
	}
	if mean := float64(p[n-1]) / 1e9 / float64(n); math.Abs(mean-1.0/500)/(1.0/500) > 0.03 {
		t.Errorf("poisson mean gap %v", mean)
	}
	c, _ := Arrival{Process: ArrivalConstant, Rate: 500}.Schedule(n, rng)
	if ks := gof.KSExponential(c, 500); ks < 0.3 {
		t.Errorf("constant arrivals look Poisson: KS %.3f", ks)
	}
	for _, cv := range []float64{0.5, 1, 3} {
		g, _ := Arrival{Process: ArrivalGamma, Rate: 100, Burstiness: cv}.Schedule(n, rng)
		var s, s2 float64
		prev := int64(0)
		for _, o := range g {
			d := float64(o-prev) / 1e9
			s, s2 = s+d, s2+d*d
			prev = o
		}
		m := s / float64(n)
		sd := math.Sqrt(s2/float64(n) - m*m)
		if math.Abs(m-0.01)/0.01 > 0.05 || math.Abs(sd/m-cv)/cv > 0.08 {
			t.Errorf("gamma cv %v: mean gap %.5f, cv %.3f", cv, m, sd/m)
		}
	}
	if s, _ := (Arrival{Process: ArrivalConcurrency, Concurrency: 4}).Schedule(10, rng); s != nil {
		t.Error("closed loop has a schedule")
	}
}

func TestTraceArrivals(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "t.txt")
	os.WriteFile(good, []byte("# seconds\n10.5\n10.0\n{\"t\": 12}\n\n11\n"), 0o644)
	s, err := Arrival{Process: ArrivalTrace, Trace: good, TimeScale: 2}.Schedule(4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{0, 1e9, 2e9, 4e9}; !equal(s, want) {
		t.Fatalf("%v, want %v", s, want)
	}
	if _, err := (Arrival{Process: ArrivalTrace, Trace: good}).Schedule(5, nil); err == nil || !strings.Contains(err.Error(), "has 4 arrivals") {
		t.Fatalf("short trace: %v", err)
	}
	for body, want := range map[string]string{"1\nabc\n": "line 2", "{\"x\": 1}\n": "line 1", "-3\n": "offset -3"} {
		p := filepath.Join(dir, "bad.txt")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := (Arrival{Process: ArrivalTrace, Trace: p}).Schedule(1, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// countingTokenizer counts whitespace words as one token and "model" as two,
// so the builder has to correct its first guess.
type countingTokenizer struct{ calls int }

func (c *countingTokenizer) Count(_ context.Context, s string) (int, error) {
	c.calls++
	n := 0
	for _, w := range strings.Fields(s) {
		n++
		if w == "model" || w == "energy" {
			n++
		}
	}
	return n, nil
}

func TestDatasets(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	tok := &countingTokenizer{}
	ps, err := Dataset{PromptTokens: Dist{Dist: "lognormal", Mean: 300, Std: 200, Min: 10, Max: 2000}, OutputTokens: Dist{Mean: 50}}.Load(ctx, 200, rng, tok)
	if err != nil {
		t.Fatal(err)
	}
	exact := 0
	for _, p := range ps {
		if n, _ := tok.Count(ctx, p.Text); n != p.Tokens || !p.Exact || p.MaxTokens != 50 {
			t.Fatalf("prompt says %d tokens, has %d", p.Tokens, n)
		}
		if p.Tokens >= 10 && p.Tokens <= 2000 {
			exact++
		}
	}
	if exact != 200 {
		t.Fatalf("%d of 200 within bounds", exact)
	}
	dir := t.TempDir()
	sg := filepath.Join(dir, "sg.json")
	os.WriteFile(sg, []byte(`[{"conversations":[{"from":"human","value":"why is the sky blue"},{"from":"gpt","value":"scattering of light by air molecules"}]},
		{"conversations":[{"from":"gpt","value":"orphan"}]}]`), 0o644)
	ps, err = Dataset{Kind: "sharegpt", Path: sg, OutputTokens: Dist{Max: 3}}.Load(ctx, 4, rng, tok)
	if err != nil || len(ps) != 4 || ps[0].Text != "why is the sky blue" || ps[0].MaxTokens != 3 || ps[0].Tokens != 5 {
		t.Fatalf("%+v %v", ps, err)
	}
	jl := filepath.Join(dir, "p.jsonl")
	os.WriteFile(jl, []byte("{\"prompt\": \"a b\", \"max_tokens\": 7}\n\n{\"prompt\": \"c\"}\n"), 0o644)
	ps, err = Dataset{Kind: "jsonl", Path: jl, OutputTokens: Dist{Mean: 9}}.Load(ctx, 50, rng, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if (p.Text == "a b" && p.MaxTokens != 7) || (p.Text == "c" && p.MaxTokens != 9) {
			t.Fatalf("%+v", p)
		}
	}
	for body, want := range map[string]string{"{\"prompt\": 3}\n": "line 1", "{\"p\": \"x\"}\n": "line 1", "": "no prompts"} {
		os.WriteFile(jl, []byte(body), 0o644)
		if _, err := (Dataset{Kind: "jsonl", Path: jl}).Load(ctx, 1, rng, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v", body, err)
		}
	}
	os.WriteFile(sg, []byte(`{"not": "a list"}`), 0o644)
	if _, err := (Dataset{Kind: "sharegpt", Path: sg}).Load(ctx, 1, rng, nil); err == nil {
		t.Error("bad ShareGPT accepted")
	}
}

// Histograms and summaries flatten to Prometheus' own series names.
func TestFlatten(t *testing.T) {
	text := `# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name="m",le="0.5"} 3
vllm:e2e_request_latency_seconds_bucket{model_name="m",le="+Inf"} 5
vllm:e2e_request_latency_seconds_sum{model_name="m"} 4.5
vllm:e2e_request_latency_seconds_count{model_name="m"} 5
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
# TYPE other counter
other 1
`
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	got := Flatten(fams, 7, []string{"vllm:"})
	var lines []string
	for _, s := range got {
		lines = append(lines, s.Name+"{"+s.Labels+"} "+strconvF(s.Value))
	}
	want := []string{
		`vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 5`,
		`vllm:e2e_request_latency_seconds_bucket{le="0.5",model_name="m"} 3`,
		`vllm:e2e_request_latency_seconds_count{model_name="m"} 5`,
		`vllm:e2e_request_latency_seconds_sum{model_name="m"} 4.5`,
		`vllm:gpu_cache_usage_perc{model_name="m"} 0.25`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s", strings.Join(lines, "\n"))
	}
	_ = dto.MetricType_GAUGE
}

func strconvF(v float64) string { return strings.TrimRight(strings.TrimRight(fmtFloat(v), "0"), ".") }

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
