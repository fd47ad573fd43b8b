package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/schemas"
)

// Config tunes ingest. The zero value works.
type Config struct {
	// Kinds to ingest (default: all).
	Kinds []schemas.Kind `yaml:"-"`
	// ConsumerPrefix names the durable consumers (<prefix>-<kind>).
	// Two sinks on one stream need different prefixes. Default "ingest".
	ConsumerPrefix string `yaml:"consumer_prefix"`
	// BatchRows flushes a table once it holds this many rows (default 500k).
	BatchRows int `yaml:"batch_rows"`
	// FlushInterval flushes at least this often while rows wait (default
	// 1 s: about one insert per second per table, as 18.16 wants).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// FetchSize is the number of messages asked for per pull (default 1000).
	FetchSize int `yaml:"fetch_size"`
	// MinTS and MaxTSAhead bound accepted timestamps: older than MinTS or
	// later than now+MaxTSAhead is dead-lettered (defaults 2015-01-01, 24 h).
	MinTS      time.Time     `yaml:"min_ts"`
	MaxTSAhead time.Duration `yaml:"max_ts_ahead"`
	// AckWait must exceed the worst time from receipt to acknowledgement
	// (default 2 minutes). Redeliveries after it are skipped by watermark.
	AckWait time.Duration `yaml:"ack_wait"`
}

func (c Config) withDefaults() Config {
	if len(c.Kinds) == 0 {
		c.Kinds = schemas.Kinds
	}
	if c.ConsumerPrefix == "" {
		c.ConsumerPrefix = "ingest"
	}
	if c.BatchRows <= 0 {
		c.BatchRows = 500_000
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.FetchSize <= 0 {
		c.FetchSize = 1000
	}
	if c.MinTS.IsZero() {
		c.MinTS = time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.MaxTSAhead <= 0 {
		c.MaxTSAhead = 24 * time.Hour
	}
	if c.AckWait <= 0 {
		c.AckWait = 2 * time.Minute
	}
	return c
}

// Headers set on dead-lettered messages.
const (
	HeaderReason          = "Lem-Dead-Letter-Reason"
	HeaderOriginalSubject = "Lem-Original-Subject"
	HeaderStreamSeq       = "Lem-Stream-Seq"
)

// Ingester runs one worker per event kind.
type Ingester struct {
	cfg     Config
	js      jetstream.JetStream
	sink    Sink
	log     zerolog.Logger
	metrics *Metrics
}

// New returns an ingester reading from js (whose streams must exist; see
// bus.EnsureStreams) into sink.
func New(js jetstream.JetStream, sink Sink, cfg Config, m *Metrics, log zerolog.Logger) *Ingester {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Ingester{cfg: cfg.withDefaults(), js: js, sink: sink, log: log, metrics: m}
}

// Run ingests until ctx ends, then flushes what it holds and returns. It
// returns early only on a setup failure.
func (in *Ingester) Run(ctx context.Context) error {
	stream, err := in.js.Stream(ctx, bus.EventStream)
	if err != nil {
		return fmt.Errorf("ingest: stream %s: %w", bus.EventStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("ingest: stream %s: %w", bus.EventStream, err)
	}
	// A recreated stream restarts its sequences: its creation time tells
	// the incarnations apart.
	epoch := info.Created.UnixNano()
	ws := make([]*worker, 0, len(in.cfg.Kinds))
	for _, k := range in.cfg.Kinds {
		w, err := in.newWorker(ctx, k, epoch)
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	wg.Wait()
	return nil
}

type worker struct {
	in      *Ingester
	kind    schemas.Kind
	table   string
	cons    jetstream.Consumer
	ev      schemas.Event
	rows    schemas.Rows
	devices *schemas.DeviceRows
	seen    map[string]struct{}
	wm      uint64
	epoch   int64
	lastSeq uint64        // highest sequence appended to rows
	last    jetstream.Msg // last message received, for AckAll
	log     zerolog.Logger
	// rate-limits repeated error logs
	lastErrLog time.Time
}

func (in *Ingester) newWorker(ctx context.Context, k schemas.Kind, epoch int64) (*worker, error) {
	table := schemas.TableFor(k)
	wm, err := in.sink.Watermark(ctx, table, epoch)
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", k, err)
	}
	name := in.cfg.ConsumerPrefix + "-" + k.String()
	// The store, not the consumer, says where to resume: a previous
	// instance may have been killed holding delivered messages it never
	// stored. Left to the consumer, those would come back only after
	// AckWait — behind newer messages that advance the watermark, so they
	// would be skipped as stored — or be acknowledged away by the next
	// AckAll. So the consumer is recreated to deliver from the watermark on.
	if err := in.js.DeleteConsumer(ctx, bus.EventStream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("resetting consumer %s: %w", name, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "lem ingest into " + in.sink.Name() + " table " + table,
		FilterSubject: schemas.SubjectFilter(k),
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       in.cfg.AckWait,
		MaxAckPending: 100_000,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if wm > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, wm+1
	}
	cons, err := in.js.CreateOrUpdateConsumer(ctx, bus.EventStream, cc)
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", name, err)
	}
	ev, _ := schemas.New(k)
	w := &worker{in: in, kind: k, table: table, cons: cons, ev: ev, rows: schemas.NewRows(k), wm: wm, epoch: epoch,
		log: in.log.With().Str("kind", k.String()).Str("table", table).Logger()}
	switch k {
	case schemas.KindPower, schemas.KindEnergy, schemas.KindState:
		w.devices = schemas.NewDeviceRows()
		w.seen = map[string]struct{}{}
	}
	in.metrics.Watermark.WithLabelValues(table).Set(float64(wm))
	w.log.Debug().Uint64("watermark", wm).Msg("worker started")
	return w, nil
}

func (w *worker) run(ctx context.Context) {
	lastFlush := time.Now()
	for ctx.Err() == nil {
		wait := w.in.cfg.FlushInterval - time.Since(lastFlush)
		if wait < 50*time.Millisecond {
			wait = 50 * time.Millisecond
		}
		batch, err := w.cons.Fetch(w.in.cfg.FetchSize, jetstream.FetchMaxWait(wait))
		if err != nil {
			w.logErr(err, "fetch failed")
			sleep(ctx, 200*time.Millisecond)
		} else {
			for msg := range batch.Messages() {
				w.handle(ctx, msg)
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
				w.logErr(err, "fetch ended with error")
			}
		}
		if w.rows.Table().Rows() >= w.in.cfg.BatchRows || time.Since(lastFlush) >= w.in.cfg.FlushInterval {
			w.flush(ctx)
			lastFlush = time.Now()
		}
	}
	// Clean shutdown: write what was received so it is acknowledged.
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.flush(fctx)
}

func (w *worker) handle(ctx context.Context, msg jetstream.Msg) {
	w.in.metrics.MessagesIn.WithLabelValues(w.kind.String()).Inc()
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to order or acknowledge.
		w.logErr(err, "message without metadata")
		return
	}
	w.last = msg
	seq := meta.Sequence.Stream
	w.in.metrics.ConsumerLag.WithLabelValues(w.kind.String()).Set(float64(meta.NumPending))
	if seq <= w.wm {
		w.in.metrics.Skipped.WithLabelValues(w.kind.String()).Inc()
		return
	}
	if err := w.ev.DecodeWire(msg.Data()); err != nil {
		w.deadLetter(ctx, msg, seq, "decode", err)
		return
	}
	now := time.Now()
	if err := w.ev.Validate(w.in.cfg.MinTS.UnixNano(), now.Add(w.in.cfg.MaxTSAhead).UnixNano()); err != nil {
		w.deadLetter(ctx, msg, seq, "invalid", err)
		return
	}
	w.rows.Append(w.ev, schemas.Position{Epoch: w.epoch, Seq: seq})
	w.lastSeq = seq
	if w.devices != nil {
		w.noteDevice(now.UnixNano())
	}
}

func (w *worker) noteDevice(ts int64) {
	var o *schemas.Origin
	var d *schemas.Device
	switch b := w.ev.(type) {
	case *schemas.PowerBatch:
		o, d = &b.Origin, &b.Device
	case *schemas.EnergyBatch:
		o, d = &b.Origin, &b.Device
	case *schemas.StateBatch:
		o, d = &b.Origin, &b.Device
	default:
		return
	}
	key := o.Host + "\x00" + d.UUID + "\x00" + o.Source + "\x00" + d.Name + "\x00" + d.MIGParent
	if _, ok := w.seen[key]; ok {
		return
	}
	w.seen[key] = struct{}{}
	w.devices.Add(o, d, ts)
}

// deadLetter republishes msg on the dead-letter stream with the reason. It
// retries until the dead-letter stream accepts the message or ctx ends, so
// that a message is never acknowledged without being kept somewhere.
func (w *worker) deadLetter(ctx context.Context, msg jetstream.Msg, seq uint64, class string, cause error) {
	w.in.metrics.DeadLettered.WithLabelValues(w.kind.String(), class).Inc()
	reason := cause.Error()
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	dl := &nats.Msg{
		Subject: schemas.DeadLetterRoot + "." + w.kind.String(),
		Data:    msg.Data(),
		Header:  nats.Header{},
	}
	dl.Header.Set(HeaderReason, class+": "+reason)
	dl.Header.Set(HeaderOriginalSubject, msg.Subject())
	dl.Header.Set(HeaderStreamSeq, strconv.FormatUint(seq, 10))
	dl.Header.Set(jetstream.MsgIDHeader, "dlq-"+strconv.FormatUint(seq, 10))
	backoff := 100 * time.Millisecond
	for {
		_, err := w.in.js.PublishMsg(ctx, dl)
		if err == nil {
			return
		}
		w.logErr(err, "dead-letter publish failed")
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// flush writes the held rows, retrying with backoff while the store fails,
// then acknowledges everything received so far.
func (w *worker) flush(ctx context.Context) {
	if w.last == nil {
		return
	}
	t := w.rows.Table()
	if t.Rows() > 0 {
		backoff := 200 * time.Millisecond
		for {
			start := time.Now()
			err := w.in.sink.Write(ctx, t)
			if err == nil {
				w.in.metrics.InsertSeconds.WithLabelValues(w.table).Observe(time.Since(start).Seconds())
				w.in.metrics.RowsWritten.WithLabelValues(w.table).Add(float64(t.Rows()))
				break
			}
			w.in.metrics.InsertErrors.WithLabelValues(w.table).Inc()
			w.logErr(err, "store write failed; retrying")
			if !sleep(ctx, backoff) {
				// Shutting down with the store unreachable: leave the
				// messages unacknowledged; they will be redelivered.
				t.Reset()
				w.last = nil
				return
			}
			backoff = min(backoff*2, 10*time.Second)
		}
		w.wm = w.lastSeq
		w.in.metrics.Watermark.WithLabelValues(w.table).Set(float64(w.wm))
		t.Reset()
	}
	if w.devices != nil && w.devices.Table().Rows() > 0 {
		if err := w.in.sink.Write(ctx, w.devices.Table()); err != nil {
			w.logErr(err, "writing device identities failed; will retry")
			clear(w.seen) // re-learn and retry on the next flush
		}
		w.devices.Table().Reset()
	}
	if err := w.last.Ack(); err != nil {
		// Harmless: the messages will be redelivered and skipped.
		w.logErr(err, "ack failed")
	}
	w.last = nil
}

func (w *worker) logErr(err error, msg string) {
	if time.Since(w.lastErrLog) < 5*time.Second {
		return
	}
	w.lastErrLog = time.Now()
	w.log.Warn().Err(err).Msg(msg)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
