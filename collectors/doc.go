// Package collectors holds the contract shared by every collector; each
// source lives in its own folder (sim/, loadgen/, and nvml/, rapl/ as they
// arrive). A collector turns readings into batched events and hands them to
// a Publisher; it never talks to the store.
package collectors

import (
	"context"

	"github.com/llm-energy-measure/lem/schemas"
)

// Publisher accepts encoded events for one subject. msgID identifies the
// batch so that retried publishes deduplicate. Implementations must not
// retain ev after returning. *bus.Publisher satisfies it.
type Publisher interface {
	Publish(subject, msgID string, ev schemas.Event) error
}

// Collector produces events until ctx ends, then publishes what it holds
// and returns.
type Collector interface {
	Name() string
	Run(ctx context.Context, pub Publisher) error
}
