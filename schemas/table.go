package schemas

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"unsafe"
)

// Column is one typed column of a Table: a slice that grows as rows are
// appended and keeps its capacity across Reset.
type Column interface {
	Name() string
	// CHType is the ClickHouse type in the base schema.
	CHType() string
	Len() int
	Reset()
	// Data returns the column's slice ([]int64, []string, ...), valid until
	// the next append or Reset. The caller must not modify it.
	Data() any
	// Slice returns a column sharing rows [a, b) of this one.
	Slice(a, b int) Column

	// Bytes is the memory the rows hold: fixed-size values by their size,
	// strings by their bytes plus a header.
	Bytes() int

	// Filter keeps the rows whose keep is true, in order.
	Filter(keep []bool)
	// ScanDest returns a fresh pointer to one value of the column's type
	// (a destination for database/sql-style Scan); AppendScanned appends
	// the value it points to.
	ScanDest() any
	AppendScanned(dest any)
	// AppendZero appends the type's zero value (a column missing from an
	// older file reads as ClickHouse's DEFAULT would).
	AppendZero()
	// Nullable reports a Nullable(Float64) column: NaN in Go is NULL in
	// the stores and exports.
	Nullable() bool

	empty() Column
	gatherInto(dst Column, perm []int32) error
}

// Col is a column of values of type T.
type Col[T any] struct {
	name, chType string
	V            []T
	// Bytes of the strings in V[:counted], so that Bytes stays linear
	// over a block's life however often it is asked.
	counted, strBytes int
}

func (c *Col[T]) Name() string   { return c.name }
func (c *Col[T]) CHType() string { return c.chType }
func (c *Col[T]) Len() int       { return len(c.V) }
func (c *Col[T]) Reset()         { c.V, c.counted, c.strBytes = c.V[:0], 0, 0 }
func (c *Col[T]) Data() any      { return c.V }
func (c *Col[T]) Append(v T)     { c.V = append(c.V, v) }
func (c *Col[T]) Slice(a, b int) Column {
	return &Col[T]{name: c.name, chType: c.chType, V: c.V[a:b:b]}
}
func (c *Col[T]) Bytes() int {
	switch v := any(c.V).(type) {
	case []string:
		for _, x := range v[c.counted:] {
			c.strBytes += len(x)
		}
		c.counted = len(v)
		return c.strBytes + 16*len(v)
	case [][]string:
		for _, xs := range v[c.counted:] {
			for _, x := range xs {
				c.strBytes += len(x) + 16
			}
		}
		c.counted = len(v)
		return c.strBytes + 24*len(v)
	}
	var zero T
	return len(c.V) * int(unsafe.Sizeof(zero))
}

func (c *Col[T]) Filter(keep []bool) {
	out := c.V[:0]
	for i, x := range c.V {
		if keep[i] {
			out = append(out, x)
		}
	}
	c.V, c.counted, c.strBytes = out, 0, 0
}

func (c *Col[T]) Nullable() bool { return strings.HasPrefix(c.chType, "Nullable(") }

func (c *Col[T]) ScanDest() any {
	if c.Nullable() {
		return new(*T)
	}
	return new(T)
}

func (c *Col[T]) AppendScanned(dest any) {
	if p, ok := dest.(**T); ok {
		if *p == nil {
			c.AppendNull()
			return
		}
		c.V = append(c.V, **p)
		return
	}
	c.V = append(c.V, *dest.(*T))
}

// AppendNull appends NULL: NaN in a float column, the zero value in
// others.
func (c *Col[T]) AppendNull() {
	var zero T
	if f, ok := any(&zero).(*float64); ok {
		*f = math.NaN()
	}
	c.V = append(c.V, zero)
}

// NullableData returns a Nullable(Float64) column's rows as ClickHouse
// takes them: nil for NaN.
func NullableData(c Column) any {
	v, ok := c.Data().([]float64)
	if !ok || !c.Nullable() {
		return c.Data()
	}
	out := make([]*float64, len(v))
	for i := range v {
		if !math.IsNaN(v[i]) {
			out[i] = &v[i]
		}
	}
	return out
}
func (c *Col[T]) AppendZero() {
	var zero T
	if f, ok := any(&zero).(*float64); ok && strings.HasPrefix(c.chType, "Nullable(") {
		*f = math.NaN() // a nullable figure absent from older data is unknown, never 0
	}
	c.V = append(c.V, zero)
}

func (c *Col[T]) empty() Column { return &Col[T]{name: c.name, chType: c.chType} }

// gatherInto appends the rows perm names, in that order, to dst.
func (c *Col[T]) gatherInto(dst Column, perm []int32) error {
	d, ok := dst.(*Col[T])
	if !ok {
		return fmt.Errorf("column %s: cannot gather into %T", c.name, dst)
	}
	v := slices.Grow(d.V, len(perm))
	for _, i := range perm {
		v = append(v, c.V[i])
	}
	d.V = v
	return nil
}

func newCol[T any](name, chType string) *Col[T] { return &Col[T]{name: name, chType: chType} }

// Table is a columnar block of rows bound for one ClickHouse table (or one
// Parquet file of the local store). The zero Table is not usable; use the
// constructors below.
type Table struct {
	Name    string
	Columns []Column
}

// Slice returns a table sharing rows [a, b) of t.
func (t *Table) Slice(a, b int) *Table {
	out := &Table{Name: t.Name, Columns: make([]Column, len(t.Columns))}
	for i, c := range t.Columns {
		out.Columns[i] = c.Slice(a, b)
	}
	return out
}

// Rows returns the number of complete rows.
func (t *Table) Rows() int {
	if len(t.Columns) == 0 {
		return 0
	}
	return t.Columns[0].Len()
}

// Reset empties every column, keeping capacity.
func (t *Table) Reset() {
	for _, c := range t.Columns {
		c.Reset()
	}
}

// Bytes is the memory the rows hold (see Column.Bytes).
func (t *Table) Bytes() int {
	n := 0
	for _, c := range t.Columns {
		n += c.Bytes()
	}
	return n
}

// Check returns an error if columns have different lengths (a broken
// invariant of the code filling the table).
func (t *Table) Check() error {
	n := t.Rows()
	for _, c := range t.Columns {
		if c.Len() != n {
			return fmt.Errorf("table %s: column %s has %d rows, want %d", t.Name, c.Name(), c.Len(), n)
		}
	}
	return nil
}

// Filter keeps the rows whose keep is true, in every column.
func (t *Table) Filter(keep []bool) {
	for _, c := range t.Columns {
		c.Filter(keep)
	}
}

// AppendKept appends the rows of src (a table of the same layout) whose
// keep is true, in order.
func (t *Table) AppendKept(src *Table, keep []bool) error {
	if len(src.Columns) != len(t.Columns) {
		return fmt.Errorf("table %s: appending %d columns to %d", t.Name, len(src.Columns), len(t.Columns))
	}
	perm := make([]int32, 0, len(keep))
	for i, k := range keep {
		if k {
			perm = append(perm, int32(i))
		}
	}
	for i, c := range src.Columns {
		if err := c.gatherInto(t.Columns[i], perm); err != nil {
			return err
		}
	}
	return nil
}

// Column returns the column named name, or nil.
func (t *Table) Column(name string) Column {
	for _, c := range t.Columns {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

// ColumnNames returns the column names in order.
func (t *Table) ColumnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name()
	}
	return names
}

// deviceCols are shared by device-scoped tables.
type deviceCols struct {
	Host        *Col[string]
	Source      *Col[string]
	DeviceIndex *Col[uint32]
	DeviceUUID  *Col[string]
}

func newDeviceCols() deviceCols {
	return deviceCols{
		Host:        newCol[string]("host", "String"),
		Source:      newCol[string]("source", "String"),
		DeviceIndex: newCol[uint32]("device_index", "UInt32"),
		DeviceUUID:  newCol[string]("device_uuid", "String"),
	}
}

func (d deviceCols) list() []Column {
	return []Column{d.Host, d.Source, d.DeviceIndex, d.DeviceUUID}
}

func (d deviceCols) append(o *Origin, dev *Device) {
	d.Host.Append(o.Host)
	d.Source.Append(o.Source)
	d.DeviceIndex.Append(dev.Index)
	d.DeviceUUID.Append(dev.UUID)
}
