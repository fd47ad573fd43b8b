package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestFormats(t *testing.T) {
	var b bytes.Buffer
	l, err := New(&b, FormatAuto, zerolog.InfoLevel) // a buffer is not a terminal: JSON
	if err != nil {
		t.Fatal(err)
	}
	l.Info().Str("k", "v").Msg("hello")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["k"] != "v" || m["message"] != "hello" {
		t.Fatalf("auto off a terminal is not JSON: %q (%v)", b.String(), err)
	}
	if ts, _ := m["time"].(string); !strings.Contains(ts, ".") {
		t.Errorf("timestamp without milliseconds: %q", ts)
	}
	b.Reset()
	l, _ = New(&b, FormatConsole, zerolog.InfoLevel)
	l.Info().Msg("hello")
	if strings.Contains(b.String(), "\x1b[") {
		t.Errorf("console format off a terminal has colour codes: %q", b.String())
	}
	if _, err := New(&b, "xml", zerolog.InfoLevel); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestRateLimited(t *testing.T) {
	var b bytes.Buffer
	l, _ := New(&b, FormatJSON, zerolog.DebugLevel)
	rl := RateLimited(l, 3, time.Hour)
	for i := 0; i < 1000; i++ {
		rl.Warn().Int("i", i).Msg("read failed")
	}
	if n := strings.Count(b.String(), "\n"); n != 3 {
		t.Fatalf("%d lines of 1000 repeated warnings, want 3", n)
	}
}
