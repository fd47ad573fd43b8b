// Package logging builds lem's loggers: one format choice for every
// command (JSON lines for daemons and log collectors, colourless console
// text when not on a terminal) and a rate limit for messages a loop can
// repeat many times a second.
package logging

import (
	"fmt"
	"io"
	"time"

	"github.com/llm-energy-measure/lem/internal/progress"
	"github.com/rs/zerolog"
)

// Formats accepted by New.
const (
	FormatAuto    = "auto"    // console on a terminal, else JSON
	FormatJSON    = "json"    // one JSON object per line, RFC 3339 times with ms
	FormatConsole = "console" // human-readable; colours only on a terminal
)

// New returns a logger writing to w in format at level.
func New(w io.Writer, format string, level zerolog.Level) (zerolog.Logger, error) {
	tty := progress.IsTerminal(w)
	if format == "" || format == FormatAuto {
		format = FormatJSON
		if tty {
			format = FormatConsole
		}
	}
	var out io.Writer
	switch format {
	case FormatJSON:
		out = w
	case FormatConsole:
		out = zerolog.ConsoleWriter{Out: w, NoColor: !tty, TimeFormat: "15:04:05.000"}
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (auto, json or console)", format)
	}
	l := zerolog.New(out).Level(level).With().Timestamp().Logger()
	return l, nil
}

func init() {
	// Millisecond timestamps: the default (seconds) made every console
	// line end in .000 and JSON lines ambiguous within a second.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
}

// RateLimited returns l letting through at most burst messages per
// period (per level); the rest are dropped. Use it for messages a
// collector's loop may repeat at its own rate (a failing read every 20 ms).
func RateLimited(l zerolog.Logger, burst uint32, period time.Duration) zerolog.Logger {
	return l.Sample(zerolog.LevelSampler{
		DebugSampler: &zerolog.BurstSampler{Burst: burst, Period: period},
		InfoSampler:  &zerolog.BurstSampler{Burst: burst, Period: period},
		WarnSampler:  &zerolog.BurstSampler{Burst: burst, Period: period},
		ErrorSampler: &zerolog.BurstSampler{Burst: burst, Period: period},
	})
}
