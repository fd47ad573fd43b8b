package platform

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The badge and the framable leaderboard: the public board's best J/token
// for the filters, markup in names inert, no cookie read or set, an ETag
// that answers 304, framable (the page) from anywhere, no script.
func TestEmbeds(t *testing.T) {
	p := newTestPlatform(t)
	jpt, ci, tps := 0.236, 0.062, 641.0
	worse := 0.5
	for _, e := range []Entry{
		{RunID: "best", Model: "llama-<b>8b</b>", Backend: "vllm", Hardware: "NVIDIA H200 SXM 141 GB", Workload: "w", Verification: "verified", JPerToken: &jpt, JPerTokenCI: &ci, TokensPerS: &tps, Flags: []string{}},
		{RunID: "worse", Model: "llama-<b>8b</b>", Backend: "sglang", Hardware: "NVIDIA H200 SXM 141 GB", Workload: "w", Verification: "verified", JPerToken: &worse, Flags: []string{}},
		{RunID: "held", Model: "llama-<b>8b</b>", Backend: "tgi", Hardware: "NVIDIA H200 SXM 141 GB", Workload: "w", Verification: "verified", JPerToken: &worse, Moderation: ModerationPending, Flags: []string{}},
	} {
		if e.Public() {
			p.srv.board.Put(e)
		}
	}
	get := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", p.http.URL+path, nil)
		req.Header.Set("Cookie", "lem_session=whatever")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, svg := get("/embed/badge.svg?model=llama-<b>8b</b>")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" || !strings.Contains(svg, "0.236 ± 0.062") ||
		strings.Contains(svg, "<b>") || !strings.Contains(svg, "llama-&lt;b&gt;8b&lt;/b&gt;") || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("badge: %s %v\n%s", resp.Status, resp.Header, svg)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := get("/embed/badge.svg?model=llama-<b>8b</b>", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("the same badge again: %s", resp.Status)
	}
	if _, svg := get("/embed/badge.svg?model=nothing"); !strings.Contains(svg, "no verified run") {
		t.Errorf("badge without a run: %s", svg)
	}
	if resp, _ := get("/embed/badge.svg?color=red"); resp.StatusCode != 400 {
		t.Errorf("unknown parameter: %s", resp.Status)
	}
	resp, page := get("/embed/leaderboard?hardware=NVIDIA+H200+SXM+141+GB&rows=5")
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(csp, "frame-ancestors *") || !strings.Contains(csp, "default-src 'none'") ||
		strings.Contains(page, "<script") || strings.Contains(page, "<b>8b") || strings.Index(page, "vllm") > strings.Index(page, "sglang") ||
		strings.Contains(page, "tgi") || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("embedded leaderboard: %s %q\n%s", resp.Status, csp, page)
	}
	if resp, _ := get("/api/leaderboard"); !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Error("the platform's own pages became framable")
	}
}
