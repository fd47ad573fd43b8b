// Package collectors holds the contract shared by every collector; each
// source lives in its own folder (nvml/, rapl/, sim/; loadgen/ is the load
// generator). A collector turns readings into batched events and hands
// them to a Publisher; it never talks to the store.
//
// Every collector folder has the same shape, as Telegraf's plugins do: a
// Config whose YAML keys are those of the experiment file's collectors:
// block, one constructor
//
//	func Build(c Config, env collectors.Env) (collectors.Collector, error)
//
// and a README.md with an embedded sample configuration (sample.yaml,
// exported as SampleConfig). A test holds every folder to it.
package collectors

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/schemas"
)

// Env is what every collector is built with beside its own Config.
type Env struct {
	Host string // the host name events are published under
	Log  zerolog.Logger
}

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
