package platform

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// A bundle is one run as uploaded to the platform: every raw event the
// run's results come from, in the wire codec ingest decodes, after a
// manifest that names the run and the results the submitter computed.
//
//	"LEMBNDL1"                  8 bytes
//	frame*                      uint32 big-endian length, then that many bytes
//	  frame 0                   the manifest, JSON (at most 1 MiB)
//	  frames 1…                 one wire message each (schemas codec)
//
// The bundle's content hash is the SHA-256 of all its bytes.
const bundleMagic = "LEMBNDL1"

// BundleFormat is the manifest's format version.
const BundleFormat = 1

const maxManifest = 1 << 20

// Manifest describes a bundle.
type Manifest struct {
	Format      int    `json:"format"`
	RunID       string `json:"run_id"`
	ToolVersion string `json:"tool_version"`
	CreatedNS   int64  `json:"created_ns"`
	// Events and Rows count what follows, per table.
	Events int            `json:"events"`
	Rows   map[string]int `json:"rows"`
	// Results are the submitter's summary figures (mean over cycles per
	// metric, as lem analyze computed them); the platform recomputes
	// them from the events and refuses a bundle that differs.
	Results map[string]float64 `json:"results"`
}

// Limits bound what one bundle may hold.
type Limits struct {
	MaxBytes  int64 // whole bundle
	MaxEvents int
	// MinTS and MaxTSAhead bound timestamps as ingest does.
	MinTS      time.Time
	MaxTSAhead time.Duration
}

// DefaultLimits: 1 GiB, 2 M events (a 1-hour run of 8 GPUs is ≈ 1.5 M
// events in batches of ≤ 2,048 rows, far fewer messages).
var DefaultLimits = Limits{MaxBytes: 1 << 30, MaxEvents: 2_000_000,
	MinTS: time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC), MaxTSAhead: 24 * time.Hour}

// bundleTables are the event tables a bundle carries: the run-scoped
// tables by run id, the device series over the run's span ± margin.
var bundleTables = []string{schemas.TableRun, schemas.TableRequest, schemas.TableToken, schemas.TableMetric,
	schemas.TablePower, schemas.TableEnergy, schemas.TableState, schemas.TableGap, schemas.TableClock}

// bundleMargin widens the device series around the run's span: the
// baseline and the counter readings that bracket the first and last
// window lie just outside it.
const bundleMargin = int64(15e9)

// WriteBundle writes run runID of s as a bundle to w and returns its
// manifest and content hash. The submitted results are computed here from
// the same events, so that what is sent is what these events give.
func WriteBundle(ctx context.Context, s *store.Store, runID, toolVersion string, w io.Writer) (Manifest, string, error) {
	m, msgs, err := collectEvents(ctx, s, runID, toolVersion)
	if err != nil {
		return m, "", err
	}
	r, err := analytics.AnalyzeRun(ctx, s, runID)
	if err != nil {
		return m, "", fmt.Errorf("analysing %s: %w", runID, err)
	}
	m.Results = summaryMeans(r)
	hash, err := writeBundle(w, m, msgs)
	return m, hash, err
}

// collectEvents reads the run's events from s and encodes them.
func collectEvents(ctx context.Context, s *store.Store, runID, toolVersion string) (Manifest, [][]byte, error) {
	m := Manifest{Format: BundleFormat, RunID: runID, ToolVersion: toolVersion, CreatedNS: time.Now().UnixNano(), Rows: map[string]int{}}
	evs, err := s.RunEvents(ctx, runID)
	if err != nil {
		return m, nil, err
	}
	if len(evs) == 0 {
		return m, nil, fmt.Errorf("run %s: not in %s", runID, s.Describe())
	}
	from, to, err := analytics.RunSpan(ctx, s, []string{runID})
	if err != nil {
		return m, nil, err
	}
	devs := runDevices(evs)
	devTable := schemas.NewDeviceRows().Table()
	if err := s.ReadTable(ctx, devTable, schemas.Filter{}); err != nil {
		return m, nil, fmt.Errorf("reading devices: %w", err)
	}
	var msgs [][]byte
	for _, name := range bundleTables {
		spec, _ := schemas.Spec(name)
		var ts []*schemas.Table
		if spec.RunScoped {
			t := spec.NewTable()
			if err := s.ReadTable(ctx, t, schemas.Filter{RunIDs: []string{runID}}); err != nil {
				return m, nil, fmt.Errorf("reading %s: %w", name, err)
			}
			ts = append(ts, t)
		} else {
			for _, d := range devs {
				t := spec.NewTable()
				if err := s.ReadTable(ctx, t, schemas.Filter{From: from - bundleMargin, To: to + bundleMargin, DeviceUUID: d}); err != nil {
					return m, nil, fmt.Errorf("reading %s of %s: %w", name, d, err)
				}
				ts = append(ts, t)
			}
		}
		for _, t := range ts {
			es, err := schemas.EventsOf(t, devTable)
			if err != nil {
				return m, nil, err
			}
			m.Rows[name] += t.Rows()
			for _, e := range es {
				msgs = append(msgs, e.AppendWire(nil))
			}
		}
	}
	m.Events = len(msgs)
	return m, msgs, nil
}

// writeBundle writes the magic, the manifest and the messages, and
// returns the content hash.
func writeBundle(w io.Writer, m Manifest, msgs [][]byte) (string, error) {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<16)
	man, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	bw.WriteString(bundleMagic)
	writeFrame(bw, man)
	for _, b := range msgs {
		writeFrame(bw, b)
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeFrame(w *bufio.Writer, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	w.Write(n[:])
	w.Write(b)
}

// summaryMeans returns each summarised metric's mean (finite ones only).
func summaryMeans(r *analytics.RunResult) map[string]float64 {
	out := map[string]float64{}
	for k, s := range r.Summary {
		if s.N > 0 && !isNaNOrInf(s.Mean) {
			out[k] = s.Mean
		}
	}
	return out
}

// Bundle is a decoded bundle: its manifest and the events as table rows,
// ready to analyse in memory or to store.
type Bundle struct {
	Manifest Manifest
	Hash     string
	Bytes    int64
	Tables   map[string]*schemas.Table // by table name, devices included
	Devices  []string                  // the run's devices (its run events')
}

// ErrBundle marks a bundle refused for what it holds (the client's fault).
var ErrBundle = errors.New("bundle refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBundle, fmt.Sprintf(format, a...))
}

// ReadBundle decodes a bundle with the codec and validation of ingest:
// every message decoded and validated, run-scoped events only of the
// manifest's run, device events only of the run's devices, within lim.
// Nothing is kept of a bundle that fails.
func ReadBundle(r io.Reader, lim Limits) (*Bundle, error) {
	h := sha256.New()
	cr := &countReader{r: io.LimitReader(r, lim.MaxBytes+1)}
	br := bufio.NewReaderSize(io.TeeReader(cr, h), 1<<16)
	magic := make([]byte, len(bundleMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != bundleMagic {
		return nil, refuse("not a lem bundle (bad magic)")
	}
	man, err := readFrame(br, maxManifest)
	if err != nil {
		return nil, refuse("manifest: %v", err)
	}
	b := &Bundle{Tables: map[string]*schemas.Table{}}
	dec := json.NewDecoder(bytesReader(man))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b.Manifest); err != nil {
		return nil, refuse("manifest: %v", err)
	}
	m := &b.Manifest
	switch {
	case m.Format != BundleFormat:
		return nil, refuse("manifest format %d, this server reads %d", m.Format, BundleFormat)
	case m.RunID == "" || len(m.RunID) > schemas.MaxShortString:
		return nil, refuse("manifest: run_id missing or too long")
	case m.Events > lim.MaxEvents:
		return nil, refuse("%d events: over the limit of %d", m.Events, lim.MaxEvents)
	}
	rows := map[schemas.Kind]schemas.Rows{}
	devices := schemas.NewDeviceRows()
	seenDev := map[string]bool{}
	type devRef struct{ host, uuid string }
	var devEvents []devRef
	minTS, maxTS := lim.MinTS.UnixNano(), time.Now().Add(lim.MaxTSAhead).UnixNano()
	n := 0
	for {
		msg, err := readFrame(br, schemas.MaxMessageSize)
		if err == io.EOF {
			break
		}
		if err != nil {
			if cr.n > lim.MaxBytes {
				return nil, refuse("over the size limit of %d bytes", lim.MaxBytes)
			}
			return nil, refuse("event %d: %v", n+1, err)
		}
		n++
		if n > m.Events || n > lim.MaxEvents {
			return nil, refuse("more events than the manifest's %d", m.Events)
		}
		ev, err := schemas.Decode(msg)
		if err != nil {
			return nil, refuse("event %d: %v", n, err)
		}
		if err := ev.Validate(minTS, maxTS); err != nil {
			return nil, refuse("event %d (%s): %v", n, ev.Kind(), err)
		}
		if id, ok := runOf(ev); ok && id != m.RunID {
			return nil, refuse("event %d (%s) belongs to run %q, the manifest's is %q", n, ev.Kind(), id, m.RunID)
		}
		if o, d, ok := deviceOf(ev); ok {
			devEvents = append(devEvents, devRef{o.Host, d.UUID})
			k := o.Host + "\x00" + d.UUID + "\x00" + o.Source
			if !seenDev[k] {
				seenDev[k] = true
				devices.Add(o, d, 0)
			}
		}
		if re, ok := ev.(*schemas.RunEvent); ok {
			for _, d := range re.Devices {
				if !slices.Contains(b.Devices, d) {
					b.Devices = append(b.Devices, d)
				}
			}
		}
		k := ev.Kind()
		if rows[k] == nil {
			rows[k] = schemas.NewRows(k)
		}
		rows[k].Append(ev, schemas.Position{})
	}
	if cr.n > lim.MaxBytes {
		return nil, refuse("over the size limit of %d bytes", lim.MaxBytes)
	}
	if n != m.Events {
		return nil, refuse("truncated: %d events of the manifest's %d", n, m.Events)
	}
	if rows[schemas.KindRun] == nil {
		return nil, refuse("no run events: nothing says what run %s was", m.RunID)
	}
	for _, d := range devEvents {
		if !slices.Contains(b.Devices, d.uuid) {
			return nil, refuse("device %s of host %s is not among the run's devices %v", d.uuid, d.host, b.Devices)
		}
	}
	for k, r := range rows {
		t := r.Table()
		if want := m.Rows[t.Name]; want != t.Rows() {
			return nil, refuse("table %s: %d rows, the manifest says %d", t.Name, t.Rows(), want)
		}
		b.Tables[schemas.TableFor(k)] = t
	}
	if devices.Table().Rows() > 0 {
		b.Tables[schemas.TableDevice] = devices.Table()
	}
	b.Bytes = cr.n
	b.Hash = hex.EncodeToString(h.Sum(nil))
	return b, nil
}

// runDevices returns the devices a run's events name, in order of first
// mention.
func runDevices(evs []schemas.RunEvent) []string {
	var devs []string
	for _, e := range evs {
		for _, d := range e.Devices {
			if !slices.Contains(devs, d) {
				devs = append(devs, d)
			}
		}
	}
	return devs
}

// runOf returns the run of a run-scoped event.
func runOf(ev schemas.Event) (string, bool) {
	switch e := ev.(type) {
	case *schemas.RunEvent:
		return e.RunID, true
	case *schemas.RequestBatch:
		return e.RunID, true
	case *schemas.TokenBatch:
		return e.RunID, true
	case *schemas.MetricBatch:
		return e.RunID, true
	}
	return "", false
}

// deviceOf returns the origin and device of a device-scoped event.
func deviceOf(ev schemas.Event) (*schemas.Origin, *schemas.Device, bool) {
	switch e := ev.(type) {
	case *schemas.PowerBatch:
		return &e.Origin, &e.Device, true
	case *schemas.EnergyBatch:
		return &e.Origin, &e.Device, true
	case *schemas.StateBatch:
		return &e.Origin, &e.Device, true
	case *schemas.GapBatch:
		return &e.Origin, &e.Device, true
	case *schemas.ClockBatch:
		return &e.Origin, &e.Device, true
	}
	return nil, nil, false
}

func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:1]); err == io.EOF {
		return nil, io.EOF
	} else if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, n[1:]); err != nil {
		return nil, errors.New("truncated frame length")
	}
	l := int(binary.BigEndian.Uint32(n[:]))
	if l > max {
		return nil, fmt.Errorf("frame of %d bytes: over the limit of %d", l, max)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("truncated frame (%d bytes announced)", l)
	}
	return b, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Store returns the bundle's events as a read-only store, for analytics.
func (b *Bundle) Store() *store.Store { return store.Wrap(&memTables{tables: b.Tables}) }

// memTables is a store.Tables over tables in memory.
type memTables struct {
	tables map[string]*schemas.Table
}

func (m *memTables) Name() string     { return "memory" }
func (m *memTables) Describe() string { return "the uploaded bundle" }
func (m *memTables) Write(context.Context, *schemas.Table) error {
	return errors.New("a bundle is read-only")
}
func (m *memTables) Watermark(context.Context, string, int64) (uint64, error) { return 0, nil }
func (m *memTables) WriteResults(context.Context, string, []*schemas.Table) error {
	return errors.New("a bundle is read-only")
}
func (m *memTables) Close() error { return nil }

func (m *memTables) ReadTable(_ context.Context, t *schemas.Table, f schemas.Filter) error {
	src := m.tables[t.Name]
	if src == nil {
		return nil
	}
	spec, ok := schemas.Spec(t.Name)
	if !ok {
		return fmt.Errorf("unknown table %s", t.Name)
	}
	keep, err := f.Keep(spec, src)
	if err != nil {
		return err
	}
	return t.AppendKept(src, keep)
}

// Scan reads the selected rows into t at once (they are in memory
// already) and leaves them there.
func (m *memTables) Scan(ctx context.Context, t *schemas.Table, f schemas.Filter, _ int, _ func(*schemas.Table) error) error {
	return m.ReadTable(ctx, t, f)
}
