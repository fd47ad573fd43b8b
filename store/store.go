// Package store is lem's one seam to where events and results are kept:
// ClickHouse (store/clickhouse) or the local Parquet store
// (store/parquet), behind one Open. Ingest writes blocks into a Store,
// analytics and the exporters read it, analysis results are written back
// into it. Consumers keep their own small interfaces (ingest.Sink,
// analytics.Store, exporters' readers); *Store satisfies each.
package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store/clickhouse"
	"github.com/llm-energy-measure/lem/store/parquet"
)

// Config selects the store: ClickHouse when ClickHouse.Addr is set, else
// the Parquet store under Parquet.
type Config struct {
	ClickHouse clickhouse.Config `yaml:"clickhouse"`
	Parquet    string            `yaml:"parquet"`
}

// Validate checks that exactly one store is named and that its settings
// are usable.
func (c Config) Validate() error {
	switch {
	case c.ClickHouse.Addr != "" && c.Parquet != "":
		return errors.New("store: give only one of a ClickHouse address and a Parquet directory")
	case c.ClickHouse.Addr != "":
		return c.ClickHouse.Validate()
	case c.Parquet != "":
		return nil
	}
	return errors.New("store: give a ClickHouse address (-clickhouse) or a Parquet directory (-parquet)")
}

// Options tune Open.
type Options struct {
	// Migrate creates the ClickHouse database and applies the migrations
	// the server supports (the Parquet store needs none).
	Migrate bool
	Log     zerolog.Logger
	// ToolVersion is recorded in result files of the Parquet store.
	ToolVersion string
}

// Tables is the table-level store each backend implements.
type Tables interface {
	// Name is "clickhouse" or "parquet"; Describe says where, for people.
	Name() string
	Describe() string
	// Write stores t atomically; Watermark is the highest stream sequence
	// of epoch stored in table (ingest's exactly-once resume point).
	Write(ctx context.Context, t *schemas.Table) error
	Watermark(ctx context.Context, table string, epoch int64) (uint64, error)
	// ReadTable appends to the empty t the rows of its table f selects.
	ReadTable(ctx context.Context, t *schemas.Table, f schemas.Filter) error
	// Scan appends the rows of t's table that f selects to the empty t
	// and, with fn, hands t to fn (then empties it) whenever it holds
	// chunk rows or more; what is left at the end stays in t.
	Scan(ctx context.Context, t *schemas.Table, f schemas.Filter, chunk int, fn func(*schemas.Table) error) error
	// WriteResults stores one run's analysis results, replacing earlier
	// ones.
	WriteResults(ctx context.Context, runID string, tables []*schemas.Table) error
	Close() error
}

// Store is an open store: the backend's table operations plus typed reads
// of runs, requests, tokens, counter readings and power series.
type Store struct {
	Tables
}

// Open opens the store c names.
func Open(ctx context.Context, c Config, o Options) (*Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.ClickHouse.Addr != "" {
		if err := c.ClickHouse.LoadPassword(); err != nil {
			return nil, err
		}
		s, err := clickhouse.Open(ctx, c.ClickHouse, o.Migrate, o.Log)
		if err != nil {
			return nil, err
		}
		return &Store{s}, nil
	}
	p := parquet.Open(c.Parquet)
	p.ToolVersion = o.ToolVersion
	return &Store{p}, nil
}

// Parquet returns the Parquet store under dir.
func Parquet(dir string) *Store { return &Store{parquet.Open(dir)} }

// Wrap returns a Store over an open backend.
func Wrap(t Tables) *Store { return &Store{t} }

func read[R interface{ Table() *schemas.Table }](ctx context.Context, s *Store, r R, f schemas.Filter) (R, error) {
	return r, s.ReadTable(ctx, r.Table(), f)
}

// RunIDs returns every run's id, ordered by the run's first event.
func (s *Store) RunIDs(ctx context.Context) ([]string, error) {
	r, err := read(ctx, s, schemas.NewRows(schemas.KindRun).(*schemas.RunRows), schemas.Filter{AllRuns: true})
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	first := map[string]int64{}
	for i, id := range r.RunID.V {
		if t, ok := first[id]; !ok || r.TS.V[i] < t {
			first[id] = r.TS.V[i]
		}
	}
	ids := make([]string, 0, len(first))
	for id := range first {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool {
		if first[ids[a]] != first[ids[b]] {
			return first[ids[a]] < first[ids[b]]
		}
		return ids[a] < ids[b]
	})
	return ids, nil
}

// RunEvents returns the run's lifecycle events in time order.
func (s *Store) RunEvents(ctx context.Context, runID string) ([]schemas.RunEvent, error) {
	r, err := read(ctx, s, schemas.NewRows(schemas.KindRun).(*schemas.RunRows), schemas.Filter{RunIDs: []string{runID}})
	if err != nil {
		return nil, fmt.Errorf("reading run %s: %w", runID, err)
	}
	out := make([]schemas.RunEvent, len(r.RunID.V))
	for i := range out {
		out[i] = schemas.RunEvent{RunID: r.RunID.V[i], Experiment: r.Experiment.V[i], Cycle: r.Cycle.V[i],
			Phase: schemas.ParseRunPhase(r.Phase.V[i]), TS: r.TS.V[i], Backend: r.Backend.V[i], Model: r.Model.V[i],
			Host: r.Host.V[i], Devices: r.Devices.V[i], Config: r.Config.V[i], Inventory: r.Inventory.V[i]}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].TS < out[b].TS })
	return out, nil
}

// scanChunk is the rows the typed reads below convert at a time: they
// scan the table in chunks into their typed table, so that a read holds
// the converted rows and one chunk of columns, not every column of the
// selection besides.
const scanChunk = 1 << 16

// ScanTable calls fn with the rows of table name that f selects, in
// chunks of about rows rows (the last may be smaller), so that memory
// follows the chunk, not the selection; fn must not keep the chunk.
func (s *Store) ScanTable(ctx context.Context, name string, f schemas.Filter, rows int, fn func(*schemas.Table) error) error {
	spec, ok := schemas.Spec(name)
	if !ok {
		return fmt.Errorf("reading %s: not a table of the catalog", name)
	}
	return s.scanInto(ctx, spec.NewTable(), f, rows, fn)
}

// scanInto is ScanTable into t (a typed table's, so that fn reads its
// typed columns), the rows left at the end handed over too.
func (s *Store) scanInto(ctx context.Context, t *schemas.Table, f schemas.Filter, rows int, fn func(*schemas.Table) error) error {
	if err := s.Scan(ctx, t, f, max(rows, 1), fn); err != nil {
		return err
	}
	if t.Rows() > 0 {
		return fn(t)
	}
	return nil
}

// Requests returns the run's requests in schedule order.
func (s *Store) Requests(ctx context.Context, runID string) ([]schemas.Request, error) {
	var out []schemas.Request
	r := schemas.NewRows(schemas.KindRequest).(*schemas.RequestRows)
	err := s.scanInto(ctx, r.Table(), schemas.Filter{RunIDs: []string{runID}}, scanChunk, func(*schemas.Table) error {
		for i := range r.RunID.V {
			out = append(out, schemas.Request{ID: r.ID.V[i], Cycle: r.Cycle.V[i], Scheduled: r.Scheduled.V[i], Sent: r.Sent.V[i],
				FirstToken: r.FirstToken.V[i], LastToken: r.LastToken.V[i], Done: r.Done.V[i], PromptTokens: r.PromptTokens.V[i],
				OutputTokens: r.OutputTokens.V[i], Status: schemas.ParseRequestStatus(r.Status.V[i]), Error: r.Error.V[i],
				ServerQueue: r.ServerQueue.V[i], ServerPrefill: r.ServerPrefill.V[i], ServerDecode: r.ServerDecode.V[i],
				KernelStamped: r.KernelStamped.V[i],
				SentKernel:    r.SentKernel.V[i] != 0})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading requests of %s: %w", runID, err)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Scheduled < out[b].Scheduled })
	return out, nil
}

// Tokens returns the run's chunk arrivals by request id, each in time
// order.
func (s *Store) Tokens(ctx context.Context, runID string) (map[string][]schemas.Token, error) {
	out := map[string][]schemas.Token{}
	r := schemas.NewRows(schemas.KindToken).(*schemas.TokenRows)
	err := s.scanInto(ctx, r.Table(), schemas.Filter{RunIDs: []string{runID}}, scanChunk, func(*schemas.Table) error {
		for i, req := range r.Request.V {
			out[req] = append(out[req], schemas.Token{Index: r.Index.V[i], TS: r.TS.V[i], Tokens: r.Tokens.V[i]})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading tokens of %s: %w", runID, err)
	}
	for _, ts := range out {
		sort.SliceStable(ts, func(a, b int) bool { return ts[a].TS < ts[b].TS })
	}
	return out, nil
}

// Energy returns the device's counter readings taken in [from, to], with
// their sources, in time order.
func (s *Store) Energy(ctx context.Context, uuid string, from, to int64) ([]schemas.CounterReading, error) {
	r, err := read(ctx, s, schemas.NewRows(schemas.KindEnergy).(*schemas.EnergyRows),
		schemas.Filter{From: from, To: to, DeviceUUID: uuid})
	if err != nil {
		return nil, fmt.Errorf("reading energy of %s: %w", uuid, err)
	}
	sources := r.Table().Column("source").Data().([]string)
	out := make([]schemas.CounterReading, len(sources))
	for i := range out {
		out[i] = schemas.CounterReading{EnergyReading: schemas.EnergyReading{TSBefore: r.TSBefore.V[i], TSAfter: r.TSAfter.V[i],
			Energy: schemas.Energy(r.Energy.V[i]), Reset: r.Reset.V[i] == 1}, Source: sources[i]}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].TSBefore < out[b].TSBefore })
	return out, nil
}

// PowerBySource returns the device's power samples in [from, to] by
// source label, each series in time order.
func (s *Store) PowerBySource(ctx context.Context, uuid string, from, to int64) (map[string][]schemas.PowerSample, error) {
	r, err := read(ctx, s, schemas.NewRows(schemas.KindPower).(*schemas.PowerRows),
		schemas.Filter{From: from, To: to, DeviceUUID: uuid})
	if err != nil {
		return nil, fmt.Errorf("reading power of %s: %w", uuid, err)
	}
	sources := r.Table().Column("source").Data().([]string)
	by := map[string][]schemas.PowerSample{}
	for i, src := range sources {
		by[src] = append(by[src], schemas.PowerSample{TS: r.TS.V[i], Power: schemas.Power(r.Power.V[i])})
	}
	for _, ps := range by {
		sort.SliceStable(ps, func(a, b int) bool { return ps[a].TS < ps[b].TS })
	}
	return by, nil
}

// Span returns, for each of devices, its counter readings in [from, to]
// (with their sources, in time order) and its power samples by source
// (each in time order), from one scan of each table over the span: the
// rows of other devices are skipped as they come.
func (s *Store) Span(ctx context.Context, devices []string, from, to int64) (map[string][]schemas.CounterReading, map[string]map[string][]schemas.PowerSample, error) {
	readings := map[string][]schemas.CounterReading{}
	power := map[string]map[string][]schemas.PowerSample{}
	for _, d := range devices {
		readings[d] = nil
		power[d] = map[string][]schemas.PowerSample{}
	}
	f := schemas.Filter{From: from, To: to}
	en := schemas.NewRows(schemas.KindEnergy).(*schemas.EnergyRows)
	err := s.scanInto(ctx, en.Table(), f, scanChunk, func(*schemas.Table) error {
		sources := en.Table().Column("source").Data().([]string)
		uuids := en.Table().Column("device_uuid").Data().([]string)
		for i, u := range uuids {
			if rs, ok := readings[u]; ok {
				readings[u] = append(rs, schemas.CounterReading{EnergyReading: schemas.EnergyReading{TSBefore: en.TSBefore.V[i], TSAfter: en.TSAfter.V[i],
					Energy: schemas.Energy(en.Energy.V[i]), Reset: en.Reset.V[i] == 1}, Source: sources[i]})
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading energy of %d devices: %w", len(devices), err)
	}
	pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	err = s.scanInto(ctx, pw.Table(), f, scanChunk, func(*schemas.Table) error {
		sources := pw.Table().Column("source").Data().([]string)
		uuids := pw.Table().Column("device_uuid").Data().([]string)
		for i, u := range uuids {
			if by, ok := power[u]; ok {
				by[sources[i]] = append(by[sources[i]], schemas.PowerSample{TS: pw.TS.V[i], Power: schemas.Power(pw.Power.V[i])})
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading power of %d devices: %w", len(devices), err)
	}
	for _, rs := range readings {
		sort.SliceStable(rs, func(a, b int) bool { return rs[a].TSBefore < rs[b].TSBefore })
	}
	for _, by := range power {
		for _, ps := range by {
			sort.SliceStable(ps, func(a, b int) bool { return ps[a].TS < ps[b].TS })
		}
	}
	return readings, power, nil
}
