// Package analytics turns raw events into energy figures: counter-based
// window energy with an idle baseline, per-cycle results with latency
// percentiles, and multi-cycle statistics with uncertainty and quality
// flags. It reads events through the Store interface, which the stores of
// package store (ClickHouse and Parquet) satisfy; both give the same
// results.
package analytics

import (
	"context"
	"sort"

	"github.com/llm-energy-measure/lem/schemas"
)

// Store is what analytics reads. Results are sorted by time.
type Store interface {
	RunIDs(ctx context.Context) ([]string, error)
	RunEvents(ctx context.Context, runID string) ([]schemas.RunEvent, error)
	Requests(ctx context.Context, runID string) ([]schemas.Request, error)
	// Tokens returns chunk arrivals by request id.
	Tokens(ctx context.Context, runID string) (map[string][]schemas.Token, error)
	// Energy returns the counter readings of a device in [from, to].
	Energy(ctx context.Context, deviceUUID string, from, to int64) ([]Reading, error)
	// PowerBySource returns the device's power samples in [from, to] by
	// source label, each in time order.
	PowerBySource(ctx context.Context, deviceUUID string, from, to int64) (map[string][]schemas.PowerSample, error)
}

// SpanReader is a Store that reads every device's counter readings and
// power samples of a time span in one pass (store.Store does): analysis
// reads a span of a run's cycles that way instead of device by device,
// which in the Parquet store decoded each block's footer and shared row
// groups once per device.
type SpanReader interface {
	// Span returns, for each of devices, its readings in [from, to] (in
	// time order) and its power samples by source (each in time order).
	Span(ctx context.Context, devices []string, from, to int64) (map[string][]Reading, map[string]map[string][]schemas.PowerSample, error)
}

// Power returns the device's best time-resolved power series in [from,
// to] — the driver buffer (nvml.buffer), else the simulator, else the
// instant field — placed on the time it describes, and its source; nil
// when there is none.
func Power(ctx context.Context, s Store, deviceUUID string, from, to int64) ([]schemas.PowerSample, string, error) {
	by, err := s.PowerBySource(ctx, deviceUUID, from, to)
	if err != nil {
		return nil, "", err
	}
	ps, src := pickSeries(by)
	return ps, src, nil
}

// powerPreference ranks power sources for calibration: lower is better.
var powerPreference = map[string]int{schemas.SourceNVMLBuffer: 0, schemas.SourceSim: 1, schemas.SourceNVMLInstant: 2}

// pickSeries keeps the preferred source's samples, sorted by time.
func pickSeries(bySource map[string][]schemas.PowerSample) ([]schemas.PowerSample, string) {
	best, rank := "", 1<<30
	for src := range bySource {
		sensor, _ := SplitSource(src)
		if r, ok := powerPreference[sensor]; ok && r < rank {
			best, rank = src, r
		}
	}
	ps := bySource[best]
	sort.Slice(ps, func(a, b int) bool { return ps[a].TS < ps[b].TS })
	return OnSensorTimebase(best, ps), best
}

// BufferLead is how far a driver power-buffer sample's stamp trails the
// power it reports: each sample is the mean of the ~20 ms period that ends
// at its stamp, so the sample holds from its stamp minus one period. Fitted
// against counter reads aligned to their refresh on two H200 boards
// (docs/validation/nvml-h200.md: −20 ms, 400 and 203 intervals).
const BufferLead = 20e6 // ns

// OnSensorTimebase returns the samples of source src placed on the time
// they describe: nvml.buffer samples move back by BufferLead (in place);
// others are returned as they are.
func OnSensorTimebase(src string, ps []schemas.PowerSample) []schemas.PowerSample {
	if sensor, _ := SplitSource(src); sensor == schemas.SourceNVMLBuffer {
		for i := range ps {
			ps[i].TS -= BufferLead
		}
	}
	return ps
}

// Reading is an energy-counter reading with its source label.
type Reading = schemas.CounterReading
