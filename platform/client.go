package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Send sends the bundle file at path (content hash hash) to the platform
// at base with token, retrying transport failures and 503s with backoff
// (an upload is idempotent: the same run and content again is a no-op).
// It returns what the platform said, for people; a refusal is an error
// that carries the platform's reason and report.
func Send(ctx context.Context, base, token, path, hash string) (string, error) {
	url := strings.TrimSuffix(base, "/") + "/api/uploads"
	var last error
	for attempt, wait := 0, time.Second; attempt < 5; attempt, wait = attempt+1, wait*2 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(wait):
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		fi, _ := f.Stat()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, f)
		if err != nil {
			f.Close()
			return "", err
		}
		req.ContentLength = fi.Size()
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/vnd.lem.bundle")
		req.Header.Set("X-Lem-Content-Hash", hash)
		resp, err := http.DefaultClient.Do(req)
		f.Close()
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK:
			var u Upload
			if err := json.Unmarshal(body, &u); err != nil {
				return "", fmt.Errorf("the platform's answer: %v", err)
			}
			return describeUpload(base, u, resp.StatusCode == http.StatusOK), nil
		case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 502 && resp.StatusCode <= 504:
			last = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
			continue
		default:
			var e apiError
			if json.Unmarshal(body, &e) != nil || e.Error == "" {
				e.Error = strings.TrimSpace(string(body))
			}
			msg := fmt.Sprintf("the platform refused the upload (%s): %s", resp.Status, e.Error)
			if e.Report != nil {
				msg += "\n" + formatReport(e.Report)
			}
			return "", errors.New(msg)
		}
	}
	return "", fmt.Errorf("uploading to %s: %v (gave up after 5 attempts; uploading again is safe)", url, last)
}

func describeUpload(base string, u Upload, again bool) string {
	var b strings.Builder
	if again {
		fmt.Fprintf(&b, "run %s was already verified with this content: nothing to do\n", u.RunID)
	} else {
		fmt.Fprintf(&b, "run %s verified and published (every figure recomputed from its events)\n", u.RunID)
	}
	if u.Report != nil {
		b.WriteString(formatReport(u.Report))
	}
	fmt.Fprintf(&b, "see %s/runs/%s\n", strings.TrimSuffix(base, "/"), u.RunID)
	return b.String()
}

func formatReport(r *Report) string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-18s %-5s %s\n", c.Name, c.Status, c.Detail)
	}
	for _, m := range r.Mismatches {
		fmt.Fprintf(&b, "  %-28s submitted %s, recomputed %s\n", m.Metric, fmtFloat(m.Submitted), fmtFloat(m.Recomputed))
	}
	return b.String()
}
