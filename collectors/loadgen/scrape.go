package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/schemas"
)

// Scraper samples an inference server's Prometheus /metrics during a run
// and publishes every sample as a metric event: vLLM's queue, prefill and
// decode times, KV-cache usage, prefix-cache hits and speculative
// acceptance; llama.cpp's, SGLang's, TGI's and the reference server's own.
type Scraper struct {
	URL      string // full URL of the metrics endpoint
	RunID    string
	Interval time.Duration // 1 s
	// Match keeps only metrics whose name starts with one of these
	// prefixes (empty: all).
	Match []string
	HTTP  *http.Client
	Clock Clock
	// Scrapes and Errors count attempts and failures.
	Scrapes, Errors atomic.Int64
	seq             int
}

// Run scrapes at once, every Interval, and once more when ctx ends,
// publishing each scrape as one batch; failed scrapes are counted and
// retried at the next tick, never fatal.
func (s *Scraper) Run(ctx context.Context, pub collectors.Publisher) error {
	if s.Interval <= 0 {
		s.Interval = time.Second
	}
	if s.HTTP == nil {
		s.HTTP = &http.Client{Timeout: 5 * time.Second}
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	scrape := func(ctx context.Context) error {
		b, err := s.Scrape(ctx)
		if err != nil {
			s.Errors.Add(1)
			return nil
		}
		if len(b.Samples) == 0 {
			return nil
		}
		s.seq++
		return pub.Publish(schemas.RunSubject(schemas.KindMetric, s.RunID), fmt.Sprintf("metric/%s/%d", s.RunID, b.Samples[0].TS), b)
	}
	for {
		if err := scrape(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			// A last scrape when stopped, so that the cycle's window is
			// bracketed by scrapes at both edges (counters' increases are
			// taken per window).
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return scrape(fctx)
		case <-t.C:
		}
	}
}

// Scrape fetches and flattens one exposition.
func (s *Scraper) Scrape(ctx context.Context) (*schemas.MetricBatch, error) {
	s.Scrapes.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", s.URL, resp.StatusCode)
	}
	ts := s.Clock.Now()
	if ts == 0 {
		ts = time.Now().UnixNano()
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.URL, err)
	}
	return &schemas.MetricBatch{RunID: s.RunID, Endpoint: s.URL, Samples: Flatten(fams, ts, s.Match)}, nil
}

// Flatten turns metric families into samples: histograms as _bucket{le},
// _sum and _count series, summaries as {quantile}, _sum and _count; sorted
// by name and labels.
func Flatten(fams map[string]*dto.MetricFamily, ts int64, match []string) []schemas.MetricSample {
	var out []schemas.MetricSample
	keep := func(name string) bool {
		if len(match) == 0 {
			return true
		}
		for _, m := range match {
			if strings.HasPrefix(name, m) {
				return true
			}
		}
		return false
	}
	for name, f := range fams {
		if !keep(name) {
			continue
		}
		for _, m := range f.GetMetric() {
			ls := labels(m.GetLabel(), "")
			add := func(n, extra string, v float64) {
				l := ls
				if extra != "" {
					l = labels(m.GetLabel(), extra)
				}
				out = append(out, schemas.MetricSample{TS: ts, Name: n, Labels: l, Value: v})
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, "", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, "", m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", `le="`+strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)+`"`, float64(b.GetCumulativeCount()))
				}
				add(name+"_sum", "", h.GetSampleSum())
				add(name+"_count", "", float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					add(name, `quantile="`+strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)+`"`, q.GetValue())
				}
				add(name+"_sum", "", sm.GetSampleSum())
				add(name+"_count", "", float64(sm.GetSampleCount()))
			default:
				add(name, "", m.GetUntyped().GetValue())
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Labels < out[j].Labels
	})
	return out
}

// labels renders label pairs canonically (sorted name="value" joined by
// commas), with extra (one rendered pair such as le="0.5") among them.
func labels(ls []*dto.LabelPair, extra string) string {
	parts := make([]string, 0, len(ls)+1)
	if extra != "" {
		parts = append(parts, extra)
	}
	for _, l := range ls {
		parts = append(parts, l.GetName()+`="`+strings.ReplaceAll(l.GetValue(), `"`, `\"`)+`"`)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
