package schemas

import (
	"fmt"
	"strings"
)

// TableSpec is everything the pipeline knows about one stored table:
// which event kind fills it (if any), how its rows are built, which column
// places a row in time, whether rows belong to runs or to devices, whether
// re-analysis replaces rows, and its sort key. Ingest, both stores,
// analytics and the exporters read these specs; adding an event kind is
// one entry here (plus its event type, codec and migration).
type TableSpec struct {
	Name string
	// Kind is the event kind stored in the table; 0 for tables no event
	// fills directly (devices, derived by ingest; the analysis results).
	Kind Kind
	// KindName is the kind's token in subjects and metrics (Kind.String).
	KindName string
	// NewEvent returns an empty event of Kind (nil for Kind 0).
	NewEvent func() Event
	// NewRows returns a row builder of Kind (nil for Kind 0).
	NewRows func() Rows
	// NewTable returns an empty table with the layout.
	NewTable func() *Table
	// TimeColumn places a row in time (ns since the Unix epoch).
	TimeColumn string
	// RunScoped tables are selected by run id, the others by time.
	RunScoped bool
	// Whole tables are small inventories, always read whole.
	Whole bool
	// Replacing tables keep the latest row per sort key (ClickHouse
	// ReplacingMergeTree, read with FINAL): devices and the results.
	Replacing bool
	// SortKey is the ORDER BY of the table's migration (a test holds the
	// two equal); ingest sorts each block by it before inserting.
	SortKey []string
}

// Rows turns decoded events into table rows. Each kind has one; Append adds
// the rows of ev (which must be of the kind's type) tagged with the position
// of the message that carried it.
type Rows interface {
	Table() *Table
	Append(ev Event, pos Position)
}

func event[T any, P interface {
	*T
	Event
}]() func() Event {
	return func() Event { return P(new(T)) }
}

func rows[R Rows](f func() R) func() Rows { return func() Rows { return f() } }
func table[R interface{ Table() *Table }](f func() R) func() *Table {
	return func() *Table { return f().Table() }
}

var deviceKey = []string{"host", "device_uuid"}

func key(prefix []string, cols ...string) []string {
	return append(append([]string(nil), prefix...), cols...)
}

// catalog lists every table: event tables in wire order of their kinds,
// then devices, then the analysis results.
var catalog = []TableSpec{
	{Name: TablePower, Kind: KindPower, KindName: "power", NewEvent: event[PowerBatch](), NewRows: rows(newPowerRows),
		NewTable: table(newPowerRows), TimeColumn: "ts_ns", SortKey: key(deviceKey, "ts_ns")},
	{Name: TableEnergy, Kind: KindEnergy, KindName: "energy", NewEvent: event[EnergyBatch](), NewRows: rows(newEnergyRows),
		NewTable: table(newEnergyRows), TimeColumn: "ts_before_ns", SortKey: key(deviceKey, "ts_before_ns")},
	{Name: TableState, Kind: KindState, KindName: "state", NewEvent: event[StateBatch](), NewRows: rows(newStateRows),
		NewTable: table(newStateRows), TimeColumn: "ts_ns", SortKey: key(deviceKey, "ts_ns")},
	{Name: TableRequest, Kind: KindRequest, KindName: "request", NewEvent: event[RequestBatch](), NewRows: rows(newRequestRows),
		NewTable: table(newRequestRows), TimeColumn: "scheduled_ns", RunScoped: true, SortKey: []string{"run_id", "request_id"}},
	{Name: TableToken, Kind: KindToken, KindName: "token", NewEvent: event[TokenBatch](), NewRows: rows(newTokenRows),
		NewTable: table(newTokenRows), TimeColumn: "ts_ns", RunScoped: true, SortKey: []string{"run_id", "request_id", "token_index"}},
	{Name: TableRun, Kind: KindRun, KindName: "run", NewEvent: event[RunEvent](), NewRows: rows(newRunRows),
		NewTable: table(newRunRows), TimeColumn: "ts_ns", RunScoped: true, SortKey: []string{"run_id", "ts_ns"}},
	{Name: TableGap, Kind: KindGap, KindName: "gap", NewEvent: event[GapBatch](), NewRows: rows(newGapRows),
		NewTable: table(newGapRows), TimeColumn: "from_ns", SortKey: key(deviceKey, "from_ns")},
	{Name: TableClock, Kind: KindClock, KindName: "clock", NewEvent: event[ClockBatch](), NewRows: rows(newClockRows),
		NewTable: table(newClockRows), TimeColumn: "ts_ns", SortKey: key(deviceKey, "ts_ns")},
	{Name: TableMetric, Kind: KindMetric, KindName: "metric", NewEvent: event[MetricBatch](), NewRows: rows(newMetricRows),
		NewTable: table(newMetricRows), TimeColumn: "ts_ns", RunScoped: true, SortKey: []string{"run_id", "name", "labels", "ts_ns"}},
	{Name: TablePlatform, Kind: KindPlatform, KindName: "platform", NewEvent: event[PlatformEvent](), NewRows: rows(newPlatformRows),
		NewTable: table(newPlatformRows), TimeColumn: "ts_ns", SortKey: []string{"type", "subject", "ts_ns"}},
	{Name: TableDevice, NewTable: table(NewDeviceRows), TimeColumn: "seen_ns", Whole: true, Replacing: true,
		SortKey: key(deviceKey, "source")},
	{Name: TableRunResults, NewTable: table(NewRunResultRows), TimeColumn: "analyzed_ns", RunScoped: true, Replacing: true,
		SortKey: []string{"run_id", "metric"}},
	{Name: TableCycleResults, NewTable: table(NewCycleResultRows), TimeColumn: "from_ns", RunScoped: true, Replacing: true,
		SortKey: []string{"run_id", "cycle"}},
	{Name: TableRequestEnerg, NewTable: table(NewRequestEnergyRows), TimeColumn: "analyzed_ns", RunScoped: true, Replacing: true,
		SortKey: []string{"run_id", "request_id"}},
}

var (
	specByName = map[string]*TableSpec{}
	specByKind [256]*TableSpec
	// Kinds lists every event kind in wire order.
	Kinds []Kind
)

func init() {
	for i := range catalog {
		s := &catalog[i]
		if specByName[s.Name] != nil {
			panic("schemas: table " + s.Name + " twice in the catalog")
		}
		specByName[s.Name] = s
		if s.Kind != 0 {
			if specByKind[s.Kind] != nil || s.NewEvent == nil || s.NewRows == nil || s.KindName == "" {
				panic(fmt.Sprintf("schemas: kind %d of table %s: duplicate or incomplete", s.Kind, s.Name))
			}
			specByKind[s.Kind] = s
			Kinds = append(Kinds, s.Kind)
		}
	}
}

// Catalog returns every table spec: event tables in wire order, then
// devices, then the analysis results.
func Catalog() []TableSpec { return append([]TableSpec(nil), catalog...) }

// Spec returns the spec of the table named name.
func Spec(name string) (TableSpec, bool) {
	if s := specByName[name]; s != nil {
		return *s, true
	}
	return TableSpec{}, false
}

// SpecOf returns the spec of the table kind k is stored in.
func SpecOf(k Kind) (TableSpec, bool) {
	if s := specByKind[k]; s != nil {
		return *s, true
	}
	return TableSpec{}, false
}

// EmptyTable returns an empty table with the layout of name (nil: unknown).
func EmptyTable(name string) *Table {
	if s := specByName[name]; s != nil {
		return s.NewTable()
	}
	return nil
}

// TableFor returns the table that events of kind k are written to.
func TableFor(k Kind) string {
	if s := specByKind[k]; s != nil {
		return s.Name
	}
	return ""
}

// NewRows returns the row builder of kind k (nil: unknown kind).
func NewRows(k Kind) Rows {
	if s := specByKind[k]; s != nil {
		return s.NewRows()
	}
	return nil
}

// New returns an empty event of kind k.
func New(k Kind) (Event, error) {
	if s := specByKind[k]; s != nil {
		return s.NewEvent(), nil
	}
	return nil, fmt.Errorf("%w: %d", ErrKind, uint8(k))
}

// SortKey returns the columns of table's ORDER BY, or nil for an unknown
// table.
func SortKey(table string) []string {
	if s := specByName[table]; s != nil {
		return s.SortKey
	}
	return nil
}

// Filter selects rows: those of the given runs from run-scoped tables,
// those inside [From, To] on the time column (of one device, when
// DeviceUUID is set) from the others; inventories whole.
type Filter struct {
	RunIDs []string
	// AllRuns selects every run of run-scoped tables (else RunIDs only;
	// no ids select nothing).
	AllRuns    bool
	From, To   int64
	DeviceUUID string
}

// SQL returns the WHERE condition selecting f's rows of spec's table with
// its arguments: "" selects everything, "false" nothing.
func (f Filter) SQL(spec TableSpec) (string, []any) {
	switch {
	case spec.Whole:
		return "", nil
	case spec.RunScoped:
		if f.AllRuns {
			return "", nil
		}
		if len(f.RunIDs) == 0 {
			return "false", nil
		}
		args := make([]any, len(f.RunIDs))
		for i, id := range f.RunIDs {
			args[i] = id
		}
		return "run_id IN (?" + strings.Repeat(", ?", len(f.RunIDs)-1) + ")", args
	}
	q, args := spec.TimeColumn+" BETWEEN ? AND ?", []any{f.From, f.To}
	if f.DeviceUUID != "" {
		q, args = "device_uuid = ? AND "+q, append([]any{f.DeviceUUID}, args...)
	}
	return q, args
}

// Keep returns which rows of t (a table of spec's layout) f selects.
func (f Filter) Keep(spec TableSpec, t *Table) ([]bool, error) {
	keep := make([]bool, t.Rows())
	switch {
	case spec.Whole || (spec.RunScoped && f.AllRuns):
		for i := range keep {
			keep[i] = true
		}
	case spec.RunScoped:
		col, ok := colData[string](t, "run_id")
		if !ok {
			return nil, fmt.Errorf("table %s: no run_id column to select runs by", t.Name)
		}
		runs := make(map[string]bool, len(f.RunIDs))
		for _, id := range f.RunIDs {
			runs[id] = true
		}
		for i, id := range col {
			keep[i] = runs[id]
		}
	default:
		ts, ok := colData[int64](t, spec.TimeColumn)
		if !ok {
			return nil, fmt.Errorf("table %s: no %s column to select time by", t.Name, spec.TimeColumn)
		}
		var uuids []string
		if f.DeviceUUID != "" {
			if uuids, ok = colData[string](t, "device_uuid"); !ok {
				return nil, fmt.Errorf("table %s: no device_uuid column to select a device by", t.Name)
			}
		}
		for i, x := range ts {
			keep[i] = x >= f.From && x <= f.To && (uuids == nil || uuids[i] == f.DeviceUUID)
		}
	}
	return keep, nil
}

func colData[T any](t *Table, name string) ([]T, bool) {
	c := t.Column(name)
	if c == nil {
		return nil, false
	}
	v, ok := c.Data().([]T)
	return v, ok
}
