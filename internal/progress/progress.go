// Package progress draws a progress line on a terminal: redrawn in place
// (at most 10 times a second) when the writer is a terminal, else one line
// per 10% so logs stay readable.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Bar is one progress line. Its methods are safe for concurrent use.
type Bar struct {
	w      io.Writer
	label  string
	total  int64
	tty    bool
	mu     sync.Mutex
	last   time.Time
	decile int64
	done   bool
}

// New returns a bar of total units on w (nil: stderr). quiet returns a bar
// that draws nothing.
func New(w io.Writer, label string, total int64, quiet bool) *Bar {
	if quiet {
		return &Bar{done: true}
	}
	if w == nil {
		w = os.Stderr
	}
	return &Bar{w: w, label: label, total: total, tty: IsTerminal(w), decile: -1}
}

// IsTerminal reports whether w is a terminal (a character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Set draws the bar at n units with an optional note (e.g. "3 failed").
func (b *Bar) Set(n int64, note string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done || b.total <= 0 {
		return
	}
	frac := float64(n) / float64(b.total)
	if b.tty {
		if now := time.Now(); n < b.total && now.Sub(b.last) < 100*time.Millisecond {
			return
		} else {
			b.last = now
		}
		const width = 30
		fill := int(frac * width)
		fmt.Fprintf(b.w, "\r%s [%s%s] %d/%d %s\033[K", b.label, strings.Repeat("#", fill), strings.Repeat("-", width-fill), n, b.total, note)
		return
	}
	if d := int64(frac * 10); d > b.decile {
		b.decile = d
		fmt.Fprintf(b.w, "%s %3.0f%% (%d/%d) %s\n", b.label, 100*frac, n, b.total, note)
	}
}

// Done finishes the line.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done && b.tty {
		fmt.Fprintln(b.w)
	}
	b.done = true
}
