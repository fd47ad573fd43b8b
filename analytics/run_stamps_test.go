package analytics

import (
	"bytes"
	"strings"
	"testing"
)

// lem analyze warns when more chunks carry a later time than their own
// than the one per request a closing usage chunk explains: the client fell
// behind and the latency figures hold upper bounds. The benign pattern
// (each request's last token read with its usage chunk) stays quiet, also
// for short responses.
func TestStampLagWarning(t *testing.T) {
	for _, c := range []struct {
		chunks, exact, requests int
		warn                    bool
	}{
		{60000, 57339, 3000, false},  // 1,000 streams, 20 tokens: ~1 bound per request
		{1000, 750, 250, false},      // 4-token responses: every last token a bound
		{120000, 100200, 6000, true}, // 2,000 streams on two saturated cores
		{1000, 0, 50, false},         // no kernel stamps at all: said on the line above
	} {
		var b bytes.Buffer
		printStamps(&b, &RunResult{Chunks: c.chunks, KernelStamped: c.exact, SentRequests: c.requests, SentKernel: c.requests})
		if got := strings.Contains(b.String(), "WARNING: "); got != c.warn {
			t.Errorf("%d of %d exact, %d requests: warning %v, want %v:\n%s", c.exact, c.chunks, c.requests, got, c.warn, b.String())
		}
	}
}
