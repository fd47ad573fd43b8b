// Package sleep waits for a duration or a context, whichever ends first.
package sleep

import (
	"context"
	"time"
)

// Ctx waits d or until ctx ends; it reports whether the whole d passed
// with ctx still live (d ≤ 0: whether ctx is live).
func Ctx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
