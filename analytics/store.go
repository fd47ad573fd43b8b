// Package analytics turns raw events into energy figures: counter-based
// window energy with an idle baseline, per-cycle results with latency
// percentiles, and multi-cycle statistics with uncertainty and quality
// flags. It reads the ClickHouse store or the local Parquet store through
// the Store interface; both give the same results.
package analytics

import (
	"context"
	"fmt"
	"sort"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/llm-energy-measure/lem/internal/pqstore"
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
	// Power returns the device's best time-resolved power series in
	// [from, to] — the driver buffer (nvml.buffer), else the simulator, else
	// the instant field — and its source; nil when there is none.
	Power(ctx context.Context, deviceUUID string, from, to int64) ([]schemas.PowerSample, string, error)
}

// powerPreference ranks power sources for calibration: lower is better.
var powerPreference = map[string]int{"nvml.buffer": 0, "sim": 1, "nvml.instant": 2}

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
	if sensor, _ := SplitSource(src); sensor == "nvml.buffer" {
		for i := range ps {
			ps[i].TS -= BufferLead
		}
	}
	return ps
}

// Reading is an energy-counter reading with its source label.
type Reading struct {
	schemas.EnergyReading
	Source string
}

// ClickHouseStore reads database DB.
type ClickHouseStore struct {
	Conn driver.Conn
	DB   string
}

func (s *ClickHouseStore) q(table string) string { return s.DB + "." + table }

func (s *ClickHouseStore) RunIDs(ctx context.Context) ([]string, error) {
	rows, err := s.Conn.Query(ctx, "SELECT run_id, min(ts_ns) AS t FROM "+s.q(schemas.TableRun)+" GROUP BY run_id ORDER BY t")
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		var t int64
		if err := rows.Scan(&id, &t); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (s *ClickHouseStore) RunEvents(ctx context.Context, runID string) ([]schemas.RunEvent, error) {
	rows, err := s.Conn.Query(ctx, "SELECT run_id, experiment, cycle, phase, ts_ns, backend, model, host, devices, config, inventory FROM "+
		s.q(schemas.TableRun)+" WHERE run_id = ? ORDER BY ts_ns", runID)
	if err != nil {
		return nil, fmt.Errorf("reading run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []schemas.RunEvent
	for rows.Next() {
		var e schemas.RunEvent
		var phase string
		if err := rows.Scan(&e.RunID, &e.Experiment, &e.Cycle, &phase, &e.TS, &e.Backend, &e.Model, &e.Host, &e.Devices, &e.Config, &e.Inventory); err != nil {
			return nil, err
		}
		e.Phase = parsePhase(phase)
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *ClickHouseStore) Requests(ctx context.Context, runID string) ([]schemas.Request, error) {
	rows, err := s.Conn.Query(ctx, "SELECT request_id, cycle, scheduled_ns, sent_ns, first_token_ns, last_token_ns, done_ns, "+
		"prompt_tokens, output_tokens, status, error, server_queue_dur_ns, server_prefill_dur_ns, server_decode_dur_ns FROM "+
		s.q(schemas.TableRequest)+" WHERE run_id = ? ORDER BY scheduled_ns", runID)
	if err != nil {
		return nil, fmt.Errorf("reading requests of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []schemas.Request
	for rows.Next() {
		var q schemas.Request
		var st string
		if err := rows.Scan(&q.ID, &q.Cycle, &q.Scheduled, &q.Sent, &q.FirstToken, &q.LastToken, &q.Done,
			&q.PromptTokens, &q.OutputTokens, &st, &q.Error, &q.ServerQueue, &q.ServerPrefill, &q.ServerDecode); err != nil {
			return nil, err
		}
		q.Status = parseStatus(st)
		out = append(out, q)
	}
	return out, rows.Err()
}

func (s *ClickHouseStore) Tokens(ctx context.Context, runID string) (map[string][]schemas.Token, error) {
	rows, err := s.Conn.Query(ctx, "SELECT request_id, token_index, ts_ns, tokens FROM "+s.q(schemas.TableToken)+
		" WHERE run_id = ? ORDER BY request_id, ts_ns", runID)
	if err != nil {
		return nil, fmt.Errorf("reading tokens of %s: %w", runID, err)
	}
	defer rows.Close()
	out := map[string][]schemas.Token{}
	for rows.Next() {
		var id string
		var t schemas.Token
		if err := rows.Scan(&id, &t.Index, &t.TS, &t.Tokens); err != nil {
			return nil, err
		}
		out[id] = append(out[id], t)
	}
	return out, rows.Err()
}

func (s *ClickHouseStore) Energy(ctx context.Context, uuid string, from, to int64) ([]Reading, error) {
	rows, err := s.Conn.Query(ctx, "SELECT ts_before_ns, ts_after_ns, energy_uj, reset, source FROM "+s.q(schemas.TableEnergy)+
		" WHERE device_uuid = ? AND ts_before_ns >= ? AND ts_before_ns <= ? ORDER BY ts_before_ns", uuid, from, to)
	if err != nil {
		return nil, fmt.Errorf("reading energy of %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []Reading
	for rows.Next() {
		var r Reading
		var reset uint8
		var e int64
		if err := rows.Scan(&r.TSBefore, &r.TSAfter, &e, &reset, &r.Source); err != nil {
			return nil, err
		}
		r.Energy, r.Reset = schemas.Energy(e), reset == 1
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *ClickHouseStore) Power(ctx context.Context, uuid string, from, to int64) ([]schemas.PowerSample, string, error) {
	rows, err := s.Conn.Query(ctx, "SELECT source, ts_ns, power_mw FROM "+s.q(schemas.TablePower)+
		" WHERE device_uuid = ? AND ts_ns BETWEEN ? AND ?", uuid, from, to)
	if err != nil {
		return nil, "", fmt.Errorf("reading power of %s: %w", uuid, err)
	}
	defer rows.Close()
	by := map[string][]schemas.PowerSample{}
	for rows.Next() {
		var src string
		var ts, p int64
		if err := rows.Scan(&src, &ts, &p); err != nil {
			return nil, "", err
		}
		by[src] = append(by[src], schemas.PowerSample{TS: ts, Power: schemas.Power(p)})
	}
	ps, src := pickSeries(by)
	return ps, src, rows.Err()
}

// ParquetStore reads the local Parquet store under Dir. It loads whole
// tables; it is meant for single-machine experiments.
type ParquetStore struct{ Dir string }

func (s *ParquetStore) runs() (*schemas.RunRows, error) {
	r := schemas.NewRows(schemas.KindRun).(*schemas.RunRows)
	return r, pqstore.ReadTable(s.Dir, r.Table())
}

func (s *ParquetStore) RunIDs(context.Context) ([]string, error) {
	r, err := s.runs()
	if err != nil {
		return nil, err
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
	sort.Slice(ids, func(a, b int) bool { return first[ids[a]] < first[ids[b]] })
	return ids, nil
}

func (s *ParquetStore) RunEvents(_ context.Context, runID string) ([]schemas.RunEvent, error) {
	r, err := s.runs()
	if err != nil {
		return nil, err
	}
	var out []schemas.RunEvent
	for i, id := range r.RunID.V {
		if id != runID {
			continue
		}
		out = append(out, schemas.RunEvent{RunID: id, Experiment: r.Experiment.V[i], Cycle: r.Cycle.V[i],
			Phase: parsePhase(r.Phase.V[i]), TS: r.TS.V[i], Backend: r.Backend.V[i], Model: r.Model.V[i], Host: r.Host.V[i],
			Devices: r.Devices.V[i], Config: r.Config.V[i], Inventory: r.Inventory.V[i]})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].TS < out[b].TS })
	return out, nil
}

func (s *ParquetStore) Requests(_ context.Context, runID string) ([]schemas.Request, error) {
	r := schemas.NewRows(schemas.KindRequest).(*schemas.RequestRows)
	if err := pqstore.ReadTable(s.Dir, r.Table()); err != nil {
		return nil, err
	}
	var out []schemas.Request
	for i, id := range r.RunID.V {
		if id != runID {
			continue
		}
		out = append(out, schemas.Request{ID: r.ID.V[i], Cycle: r.Cycle.V[i], Scheduled: r.Scheduled.V[i], Sent: r.Sent.V[i],
			FirstToken: r.FirstToken.V[i], LastToken: r.LastToken.V[i], Done: r.Done.V[i], PromptTokens: r.PromptTokens.V[i],
			OutputTokens: r.OutputTokens.V[i], Status: parseStatus(r.Status.V[i]), Error: r.Error.V[i],
			ServerQueue: r.ServerQueue.V[i], ServerPrefill: r.ServerPrefill.V[i], ServerDecode: r.ServerDecode.V[i]})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Scheduled < out[b].Scheduled })
	return out, nil
}

func (s *ParquetStore) Tokens(_ context.Context, runID string) (map[string][]schemas.Token, error) {
	r := schemas.NewRows(schemas.KindToken).(*schemas.TokenRows)
	if err := pqstore.ReadTable(s.Dir, r.Table()); err != nil {
		return nil, err
	}
	out := map[string][]schemas.Token{}
	for i, id := range r.RunID.V {
		if id == runID {
			req := r.Request.V[i]
			out[req] = append(out[req], schemas.Token{Index: r.Index.V[i], TS: r.TS.V[i], Tokens: r.Tokens.V[i]})
		}
	}
	for _, ts := range out {
		sort.Slice(ts, func(a, b int) bool { return ts[a].TS < ts[b].TS })
	}
	return out, nil
}

func (s *ParquetStore) Energy(_ context.Context, uuid string, from, to int64) ([]Reading, error) {
	r := schemas.NewRows(schemas.KindEnergy).(*schemas.EnergyRows)
	if err := pqstore.ReadTable(s.Dir, r.Table()); err != nil {
		return nil, err
	}
	uuids := r.Table().Columns[3].Data().([]string)
	sources := r.Table().Columns[1].Data().([]string)
	var out []Reading
	for i, u := range uuids {
		if u != uuid || r.TSBefore.V[i] < from || r.TSBefore.V[i] > to {
			continue
		}
		out = append(out, Reading{EnergyReading: schemas.EnergyReading{TSBefore: r.TSBefore.V[i], TSAfter: r.TSAfter.V[i],
			Energy: schemas.Energy(r.Energy.V[i]), Reset: r.Reset.V[i] == 1}, Source: sources[i]})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].TSBefore < out[b].TSBefore })
	return out, nil
}

func (s *ParquetStore) Power(_ context.Context, uuid string, from, to int64) ([]schemas.PowerSample, string, error) {
	r := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	if err := pqstore.ReadTable(s.Dir, r.Table()); err != nil {
		return nil, "", err
	}
	cols := r.Table().Columns
	sources, uuids := cols[1].Data().([]string), cols[3].Data().([]string)
	by := map[string][]schemas.PowerSample{}
	for i, u := range uuids {
		if u == uuid && r.TS.V[i] >= from && r.TS.V[i] <= to {
			by[sources[i]] = append(by[sources[i]], schemas.PowerSample{TS: r.TS.V[i], Power: schemas.Power(r.Power.V[i])})
		}
	}
	ps, src := pickSeries(by)
	return ps, src, nil
}

func parsePhase(s string) schemas.RunPhase {
	for p := schemas.RunStart; p <= schemas.RunBaseline; p++ {
		if p.String() == s {
			return p
		}
	}
	return 255
}

func parseStatus(s string) schemas.RequestStatus {
	for st := schemas.StatusOK; st <= schemas.StatusCancelled; st++ {
		if st.String() == s {
			return st
		}
	}
	return schemas.StatusError
}

var (
	_ Store = (*ClickHouseStore)(nil)
	_ Store = (*ParquetStore)(nil)
)
