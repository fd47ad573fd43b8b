package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/schemas"
)

// delivery is a JetStream message as a pull consumer hands it over: only
// what the worker reads of it is filled in.
type delivery struct {
	jetstream.Msg
	data     []byte
	consumer uint64
	stream   uint64
}

func (d *delivery) Data() []byte { return d.data }
func (d *delivery) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Consumer: d.consumer, Stream: d.stream}, Timestamp: time.Now()}, nil
}

func powerWorker() *worker {
	in := &Ingester{cfg: Config{}.withDefaults(), metrics: NewMetrics(nil)}
	ev, _ := schemas.New(schemas.KindPower)
	return &worker{in: in, kind: schemas.KindPower, ev: ev, seen: map[string]struct{}{}, log: zerolog.Nop(),
		cur: &block{rows: schemas.NewRows(schemas.KindPower), devices: schemas.NewDeviceRows()}}
}

// TestDeliveriesMustFollowOn: the worker takes a delivery only when its
// consumer sequence follows the last one taken, starting at 1 on the
// consumer it made; otherwise deliveries went astray and it resyncs from
// the store. A cluster test lost half its rows when the first delivery
// after a restart (consumer sequence 2,001 — the first 2,000 had gone to a
// fetch the client no longer read) was taken: AckAll on it acknowledged
// the missing ones away.
func TestDeliveriesMustFollowOn(t *testing.T) {
	pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "sim"}, Device: schemas.Device{UUID: "GPU-0"},
		Samples: []schemas.PowerSample{{TS: time.Now().UnixNano(), Power: 1000}}}
	data := pb.AppendWire(nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		consumer []uint64 // consumer sequences delivered, stream sequence = 100 + i
		taken    int      // rows appended before the resync (or all)
		resync   bool
	}{
		{"in order from 1", []uint64{1, 2, 3}, 3, false},
		{"first is not 1", []uint64{2001, 2002}, 0, true},
		{"a jump", []uint64{1, 2, 5}, 2, true},
		{"a step back", []uint64{1, 2, 2}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := powerWorker()
			for i, c := range tc.consumer {
				w.handle(ctx, &delivery{data: data, consumer: c, stream: uint64(100 + i)})
			}
			if got := w.cur.rows.Table().Rows(); got != tc.taken {
				t.Errorf("%d rows taken, want %d", got, tc.taken)
			}
			if w.resync != tc.resync {
				t.Errorf("resync %v, want %v", w.resync, tc.resync)
			}
		})
	}
}
