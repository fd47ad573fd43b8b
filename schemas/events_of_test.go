package schemas

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Rows built from events, turned back into events and re-encoded, give the
// same events and the same rows: EventsOf is Rows.Append's inverse.
func TestEventsOfInvertsRows(t *testing.T) {
	devices := NewDeviceRows()
	for _, ev := range samples() {
		switch b := ev.(type) {
		case *PowerBatch:
			devices.Add(&b.Origin, &b.Device, 1)
		case *StateBatch:
			devices.Add(&b.Origin, &b.Device, 1)
		}
	}
	for _, ev := range samples() {
		rows := NewRows(ev.Kind())
		rows.Append(ev, Position{Epoch: 1, Seq: 7})
		got, err := EventsOf(rows.Table(), devices.Table())
		if err != nil {
			t.Fatalf("%s: %v", ev.Kind(), err)
		}
		if len(got) != 1 {
			t.Fatalf("%s: %d events, want 1", ev.Kind(), len(got))
		}
		// Through the wire: what a bundle carries.
		dec, err := Decode(got[0].AppendWire(nil))
		if err != nil {
			t.Fatalf("%s: decoding: %v", ev.Kind(), err)
		}
		want := ev
		if ev.Kind() == KindToken {
			// Request references are renumbered by first use; the rows are the same.
			back := NewRows(ev.Kind())
			back.Append(dec, Position{Epoch: 1, Seq: 7})
			if a, b := strings.Join(rowsOf(rows.Table()), "\n"), strings.Join(rowsOf(back.Table()), "\n"); a != b {
				t.Fatalf("tokens: rows differ\n%s\n---\n%s", a, b)
			}
			continue
		}
		if !reflect.DeepEqual(normalise(dec), normalise(want)) {
			t.Errorf("%s: got %+v, want %+v", ev.Kind(), dec, want)
		}
	}
}

// normalise clears what the store does not keep: nothing but empty-vs-nil
// slices.
func normalise(ev Event) Event {
	if r, ok := ev.(*RunEvent); ok && len(r.Devices) == 0 {
		r.Devices = nil
	}
	return ev
}

func TestEventsOfSplitsAndGroups(t *testing.T) {
	rows := newPowerRows()
	for i := range 5000 {
		dev := Device{UUID: "GPU-a"}
		if i%2 == 1 {
			dev.UUID = "GPU-b"
		}
		rows.Append(&PowerBatch{Origin: Origin{Host: "h", Source: "sim"}, Device: dev, Samples: []PowerSample{{TS: int64(i), Power: 1}}}, Position{})
	}
	evs, err := EventsOf(rows.Table(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 5000 { // alternating devices: one event per row
		t.Fatalf("%d events, want 5000", len(evs))
	}
	sorted := newPowerRows()
	for i := range 5000 {
		sorted.Append(&PowerBatch{Origin: Origin{Host: "h", Source: "sim"}, Device: Device{UUID: "GPU-a"}, Samples: []PowerSample{{TS: int64(i), Power: 1}}}, Position{})
	}
	evs, err = EventsOf(sorted.Table(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || len(evs[0].(*PowerBatch).Samples) != maxRowsPerEvent {
		t.Fatalf("%d events, first %d samples; want 3 of at most %d", len(evs), len(evs[0].(*PowerBatch).Samples), maxRowsPerEvent)
	}
	if _, err := EventsOf(NewDeviceRows().Table(), nil); err == nil {
		t.Fatal("devices table accepted: it carries no event kind")
	}
	long := newRequestRows()
	for i := range 20 {
		long.Append(&RequestBatch{RunID: "r", Requests: []Request{{ID: fmt.Sprint(i), Status: StatusError, Error: strings.Repeat("x", MaxLongString)}}}, Position{})
	}
	evs, err = EventsOf(long.Table(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if b := ev.AppendWire(nil); len(b) > MaxMessageSize {
			t.Fatalf("request event of %d bytes: over the %d-byte message limit", len(b), MaxMessageSize)
		}
	}
	broken := newPowerRows().Table()
	broken.Columns = broken.Columns[:3]
	if _, err := EventsOf(broken, nil); err == nil || !strings.Contains(err.Error(), "column") {
		t.Fatalf("a table without its columns: %v", err)
	}
}
