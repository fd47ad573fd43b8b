package platform

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/llm-energy-measure/lem/analytics"
)

// Embedding: an SVG badge ("J/token of model X on GPU Y") and a framable
// leaderboard view for other sites. Both are computed from the public
// board only (approved runs on a moderated platform), read no cookie and
// set none, carry an ETag and a cache lifetime, and run no script.

// embedQuery turns an embed URL's filters into a leaderboard query: the
// dimensions, verified (default on for embeds), and rows.
func embedQuery(r *http.Request, rows int) (Query, error) {
	v := r.URL.Query()
	q := Query{Sort: "j_per_token", Filters: map[string]string{}, Page: 1, PerPage: rows, VerifiedOnly: v.Get("verified") != "0"}
	for k := range v {
		if !slices.Contains(Dimensions, k) && k != "verified" && k != "rows" {
			return q, fmt.Errorf("unknown parameter %q (filters: %s, verified)", k, strings.Join(Dimensions, ", "))
		}
	}
	for _, d := range Dimensions {
		if x := v.Get(d); x != "" {
			q.Filters[d] = x
		}
	}
	return q, nil
}

// embedResult answers an embed's query from the board (400 for a bad one).
func (s *Server) embedResult(w http.ResponseWriter, r *http.Request, rows int) (Result, bool) {
	q, err := embedQuery(r, rows)
	if err == nil {
		var res Result
		if res, err = s.board.Query(q); err == nil {
			return res, true
		}
	}
	writeErr(w, http.StatusBadRequest, "%v", err)
	return Result{}, false
}

// serveCached writes body with an ETag, answering 304 to a matching
// If-None-Match; caches may keep it for five minutes.
func serveCached(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", contentType)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(body)
}

// handleBadge draws the best J/token among the public runs the filters
// select as a badge: "J/token | 0.236 ± 0.062 · model · hardware".
func (s *Server) handleBadge(w http.ResponseWriter, r *http.Request) {
	res, ok := s.embedResult(w, r, 1)
	if !ok {
		return
	}
	label, value, colour := "lem J/token", "no verified run", "#9f9f9f"
	if len(res.Rows) > 0 && res.Rows[0].JPerToken != nil {
		e := res.Rows[0]
		value = fmtJPerToken(e) + " · " + e.Model + " · " + e.Hardware
		colour = "#0b5cad"
		if e.Simulated {
			value += " · simulated"
			colour = "#9a6700"
		}
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	serveCached(w, r, "image/svg+xml", badgeSVG(label, value, colour))
}

func fmtJPerToken(e Entry) string {
	if e.JPerTokenCI != nil {
		return analytics.MeanCI(*e.JPerToken, *e.JPerTokenCI)
	}
	return fmt.Sprintf("%.3g", *e.JPerToken)
}

// badgeSVG draws a two-part flat badge; widths follow the text (6.6 px a
// character of 11 px Verdana-like text, an estimate that errs wide).
func badgeSVG(label, value, colour string) []byte {
	if utf8.RuneCountInString(value) > 120 {
		value = string([]rune(value)[:119]) + "…"
	}
	lw := 12 + 6.6*float64(utf8.RuneCountInString(label))
	vw := 12 + 6.6*float64(utf8.RuneCountInString(value))
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="20" role="img" aria-label="%s: %s">`, lw+vw, html.EscapeString(label), html.EscapeString(value))
	fmt.Fprintf(&b, `<title>%s: %s</title>`, html.EscapeString(label), html.EscapeString(value))
	fmt.Fprintf(&b, `<rect width="%.0f" height="20" fill="#555"/><rect x="%.0f" width="%.0f" height="20" fill="%s"/>`, lw, lw, vw, colour)
	fmt.Fprintf(&b, `<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="6" y="14">%s</text><text x="%.0f" y="14">%s</text></g></svg>`,
		html.EscapeString(label), lw+6, html.EscapeString(value))
	return b.Bytes()
}

// handleEmbedBoard serves a small leaderboard for an iframe: the top rows
// by J/token of the public runs the filters select, plain HTML with its
// own style, no script; framable from anywhere.
func (s *Server) handleEmbedBoard(w http.ResponseWriter, r *http.Request) {
	rows := 10
	if v := r.URL.Query().Get("rows"); v != "" {
		n, err := intParam(v, 10)
		if err != nil || n < 1 || n > 50 {
			writeErr(w, http.StatusBadRequest, "rows: 1 to 50")
			return
		}
		rows = n
	}
	res, ok := s.embedResult(w, r, rows)
	if !ok {
		return
	}
	var b bytes.Buffer
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>LLM inference energy — lem</title><style>` +
		`body{font:13px/1.4 system-ui,sans-serif;margin:8px;color:#1b1f24}table{border-collapse:collapse}th,td{padding:3px 8px;border-bottom:1px solid #d0d7de;text-align:left}` +
		`td.n{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600;margin-bottom:4px}small{color:#4b5563}</style></head><body>`)
	fmt.Fprintf(&b, `<table><caption>J/token, lowest first — %s</caption><thead><tr><th scope="col">model</th><th scope="col">backend</th><th scope="col">hardware</th><th scope="col">J/token (95%% CI)</th><th scope="col">tokens/s</th></tr></thead><tbody>`,
		html.EscapeString(orDefault(res.Workload, "all workloads")))
	for _, e := range res.Rows {
		jpt, tps := "—", "—"
		if e.JPerToken != nil {
			jpt = fmtJPerToken(e)
		}
		if e.TokensPerS != nil {
			tps = fmt.Sprintf("%.0f", *e.TokensPerS)
		}
		mark := ""
		if e.Simulated {
			mark = " (simulated)"
		}
		fmt.Fprintf(&b, `<tr><td>%s%s</td><td>%s</td><td>%s</td><td class="n">%s</td><td class="n">%s</td></tr>`,
			html.EscapeString(e.Model), mark, html.EscapeString(e.Backend), html.EscapeString(e.Hardware), html.EscapeString(jpt), tps)
	}
	if len(res.Rows) == 0 {
		b.WriteString(`<tr><td colspan="5">no run matches</td></tr>`)
	}
	b.WriteString(`</tbody></table><small>Every figure recomputed from its run's raw telemetry by <a href="/" target="_blank" rel="noopener">lem</a>.</small></body></html>`)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors *; base-uri 'none'")
	serveCached(w, r, "text/html; charset=utf-8", b.Bytes())
}
