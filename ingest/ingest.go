package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/fence"
	"github.com/llm-energy-measure/lem/internal/sleep"
	"github.com/llm-energy-measure/lem/schemas"
)

// Config tunes ingest. The zero value works.
type Config struct {
	// Kinds to ingest (default: all).
	Kinds []schemas.Kind `yaml:"-"`
	// ConsumerPrefix names the durable consumers (<prefix>-<kind>).
	// Two sinks on one stream need different prefixes. Default "ingest".
	ConsumerPrefix string `yaml:"consumer_prefix"`
	// BatchRows flushes a table once it holds this many rows (default
	// 500k, at most 1,000,000: ClickHouse squashes an insert's blocks into
	// one part only below min_insert_block_size_rows, 1,048,576; ADR 0003).
	BatchRows int `yaml:"batch_rows"`
	// BatchBytes bounds the memory of a block being filled: a table is
	// flushed once its rows hold this many bytes (default 64 MiB, at most
	// 200 MiB, under ClickHouse's min_insert_block_size_bytes of 256 MiB).
	// With one block filling and one being written per event kind,
	// ingest's row memory stays under 2 × kinds × BatchBytes.
	BatchBytes int `yaml:"batch_bytes"`
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
	// Shared lets several ingest processes share the consumers (ADR
	// 0017): each kind is ingested by the one process holding its lease
	// in the LEM_INGEST_LEASES bucket, and the kinds are spread over the
	// processes alive. Without it one process must own all consumers: a
	// second would reset them under the first.
	Shared bool `yaml:"shared"`
	// LeaseTTL is how long a lease lasts unrenewed (default 10 s; renewed
	// every quarter of it). A lease that expired is taken over only after
	// a further LeaseTTL, so that a holder cut off mid-insert has stopped.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Instance names this process among the sharers (default host-pid).
	Instance string `yaml:"instance"`
	// Replicas of the lease bucket (default 1; 3 on a 3-node cluster).
	Replicas int `yaml:"replicas"`
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
	c.BatchRows = min(c.BatchRows, MaxBatchRows)
	if c.BatchBytes <= 0 {
		c.BatchBytes = 64 << 20
	}
	c.BatchBytes = min(c.BatchBytes, MaxBatchBytes)
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
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.Instance == "" {
		host, _ := os.Hostname()
		c.Instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	return c
}

// Upper bounds of Config.BatchRows and BatchBytes: below them ClickHouse
// writes an insert as one part, which exactly-once needs (ADR 0003).
const (
	MaxBatchRows  = 1_000_000
	MaxBatchBytes = 200 << 20
)

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
	var info *jetstream.StreamInfo
	err := in.retry(ctx, "reading the stream", func() error {
		stream, err := in.js.Stream(ctx, bus.EventStream)
		if err == nil {
			info, err = stream.Info(ctx)
		}
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ingest: stream %s: %w", bus.EventStream, err)
	}
	// A recreated stream restarts its sequences: its creation time tells
	// the incarnations apart.
	epoch := info.Created.UnixNano()
	if in.cfg.Shared {
		return in.runShared(ctx, epoch)
	}
	ws := make([]*worker, 0, len(in.cfg.Kinds))
	for _, k := range in.cfg.Kinds {
		w, err := in.startWorker(ctx, k, epoch, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting: nothing was taken, nothing is lost
			}
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

// retry runs f until it succeeds, fails for good or ctx ends. JetStream
// answering nothing for a while (a cluster electing a leader, a node
// restarting) is waited for; anything else is returned.
func (in *Ingester) retry(ctx context.Context, what string, f func() error) error {
	for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := f()
		if err == nil || ctx.Err() != nil || !bus.Transient(err) {
			return err
		}
		in.log.Warn().Err(err).Dur("retry_in", backoff).Msg(what)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// startWorker makes kind k's worker, its consumer delivering from the
// stored watermark on. limit, when not nil, fences it (shared ingest):
// the time until which its lease is surely its own; it stores nothing
// once that has passed, and each write is bounded by it (ADR 0019).
func (in *Ingester) startWorker(ctx context.Context, k schemas.Kind, epoch int64, limit func() time.Time) (*worker, error) {
	var w *worker
	err := in.retry(ctx, "setting up the consumer of "+k.String(), func() (err error) {
		w, err = in.newWorker(ctx, k, epoch)
		return err
	})
	if err != nil {
		return nil, err
	}
	w.limit = limit
	return w, nil
}

// consumerFrom (re)creates kind k's durable consumer to deliver from the
// stored watermark wm on. The store, not the consumer, says where to
// resume: a previous instance may have been killed holding delivered
// messages it never stored, and a cluster node that died may have
// delivered messages that never arrived. Left to the consumer, those
// would come back only after AckWait — behind newer messages that advance
// the watermark, so they would be skipped as stored — or be acknowledged
// away by the next AckAll. So the consumer is recreated to deliver from
// the watermark on.
func (in *Ingester) consumerFrom(ctx context.Context, k schemas.Kind, wm uint64) (jetstream.Consumer, error) {
	name := in.cfg.ConsumerPrefix + "-" + k.String()
	if err := in.js.DeleteConsumer(ctx, bus.EventStream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("resetting consumer %s: %w", name, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "lem ingest into " + in.sink.Name() + " table " + schemas.TableFor(k),
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
	return cons, nil
}

// A worker moves one event kind: it fetches and decodes messages into a
// block while its inserter writes the previous block, so that decoding
// and the store's insert overlap. Each block is acknowledged (AckAll on
// its last message) only after it is stored; blocks are written in order.
type worker struct {
	in    *Ingester
	kind  schemas.Kind
	table string
	cons  jetstream.Consumer
	ev    schemas.Event
	cur   *block      // being filled
	free  chan *block // written blocks, back for reuse
	full  chan *block // blocks to write, in order
	seen  map[string]struct{}
	wm    uint64 // highest sequence stored (written by the inserter)
	epoch int64
	// lastSeq is the highest sequence appended to any block: a message at
	// or below it is stored or on its way (a redelivery: skipped).
	lastSeq uint64
	// dseq is the consumer sequence of the last delivery handled: each
	// delivery must be the next one. A jump (deliveries that never arrived:
	// a cluster node died holding them) or a step back (a new consumer
	// leader that had not heard of the last deliveries) breaks the premise
	// of the lastSeq skip, so the worker resyncs from the stored watermark.
	dseq   uint64
	resync bool
	// limit fences a shared worker (nil otherwise): past it, this process
	// may no longer hold the kind's lease. The worker then stores and
	// acknowledges nothing more and stops (lost); a write under way when
	// it passes fails in the store (internal/fence).
	limit  func() time.Time
	lost   atomic.Bool
	sorter schemas.Sorter
	log    zerolog.Logger
	// rate-limits repeated error logs
	errMu      sync.Mutex
	lastErrLog time.Time
}

// block is one insert's worth of rows and the message that acknowledges
// them.
type block struct {
	rows    schemas.Rows
	devices *schemas.DeviceRows // device identities first seen in this block
	last    jetstream.Msg       // last message received, for AckAll
	lastSeq uint64              // highest sequence in rows
	stamps  []int64             // JetStream arrival of each message, ns
}

func (in *Ingester) newWorker(ctx context.Context, k schemas.Kind, epoch int64) (*worker, error) {
	table := schemas.TableFor(k)
	wm, err := in.sink.Watermark(ctx, table, epoch)
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", k, err)
	}
	cons, err := in.consumerFrom(ctx, k, wm)
	if err != nil {
		return nil, err
	}
	ev, _ := schemas.New(k)
	w := &worker{in: in, kind: k, table: table, cons: cons, ev: ev, wm: wm, lastSeq: wm, epoch: epoch,
		free: make(chan *block, 2), full: make(chan *block, 1),
		log: in.log.With().Str("kind", k.String()).Str("table", table).Logger()}
	for range 2 { // one filling, one being written
		b := &block{rows: schemas.NewRows(k)}
		switch k {
		case schemas.KindPower, schemas.KindEnergy, schemas.KindState:
			b.devices = schemas.NewDeviceRows()
			w.seen = map[string]struct{}{}
		}
		w.free <- b
	}
	in.metrics.Watermark.WithLabelValues(table).Set(float64(wm))
	w.log.Debug().Uint64("watermark", wm).Msg("worker started")
	return w, nil
}

func (w *worker) run(ctx context.Context) {
	// The inserter outlives ctx by a grace period, so that a clean
	// shutdown stores (and acknowledges) what was received.
	ictx, icancel := context.WithCancel(context.Background())
	defer icancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownGrace, icancel) })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.insert(ictx)
	}()
	w.cur = <-w.free
	lastFlush := time.Now()
	for ctx.Err() == nil && !w.lost.Load() {
		wait := w.in.cfg.FlushInterval - time.Since(lastFlush)
		if wait < 50*time.Millisecond {
			wait = 50 * time.Millisecond
		}
		// At most FetchSize messages and fetchBytes bytes at once: the
		// bytes bound holds memory whatever the messages' size.
		batch, err := w.cons.Fetch(w.in.cfg.FetchSize, jetstream.FetchMaxWait(wait), jetstream.FetchMaxBytes(fetchBytes))
		if err != nil {
			w.logErr(err, "fetch failed")
			sleep.Ctx(ctx, 200*time.Millisecond)
		} else {
			for msg := range batch.Messages() {
				if w.cur == nil { // shutting down inside a hand-off
					continue
				}
				w.handle(ctx, msg)
				if w.blockFull() {
					w.handOff(ctx)
					lastFlush = time.Now()
				}
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
				w.logErr(err, "fetch ended with error")
			}
			if w.resync && w.cur != nil {
				w.resyncFromWatermark(ctx)
				lastFlush = time.Now()
			}
		}
		if w.cur != nil && time.Since(lastFlush) >= w.in.cfg.FlushInterval {
			w.handOff(ctx)
			lastFlush = time.Now()
		}
	}
	// Clean shutdown: write what was received so it is acknowledged.
	if w.cur != nil && w.cur.last != nil && !w.lost.Load() {
		w.full <- w.cur
	}
	close(w.full)
	<-done
}

// resyncFromWatermark stores what was received in order, waits until it
// is written, and recreates the consumer to deliver from the stored
// watermark on: nothing after it is lost (it comes again), nothing before
// it is stored twice (the skip and the store's watermark).
func (w *worker) resyncFromWatermark(ctx context.Context) {
	w.handOff(ctx)
	if w.cur == nil {
		return // stopping
	}
	// Two blocks in all: the one left to the inserter is written once it
	// is back among the free ones.
	select {
	case b := <-w.free:
		w.free <- b
	case <-ctx.Done():
		return
	}
	for backoff := 250 * time.Millisecond; ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		if !w.owns() {
			return // the lease's next holder makes its own consumer
		}
		cons, err := w.in.consumerFrom(ctx, w.kind, w.wm)
		if err == nil {
			w.cons, w.lastSeq, w.dseq, w.resync = cons, w.wm, 0, false
			w.in.metrics.Resyncs.WithLabelValues(w.kind.String()).Inc()
			w.log.Info().Uint64("watermark", w.wm).Msg("resynced: delivering from the stored watermark on")
			return
		}
		w.logErr(err, "resync failed")
		sleep.Ctx(ctx, backoff)
	}
}

// fetchBytes bounds one fetch; it must admit the largest message.
const fetchBytes = 2 * schemas.MaxMessageSize

// blockFull reports whether the block being filled reached BatchRows or
// BatchBytes.
func (w *worker) blockFull() bool {
	t := w.cur.rows.Table()
	return t.Rows() >= w.in.cfg.BatchRows || t.Bytes() >= w.in.cfg.BatchBytes
}

// shutdownGrace bounds how long a stopping worker keeps trying to store
// what it holds; what is not stored by then stays unacknowledged and is
// redelivered to the next ingest.
const shutdownGrace = 30 * time.Second

// handOff queues the current block for writing and takes an empty one,
// waiting while the inserter still holds both (backpressure: the stream
// keeps the messages meanwhile).
func (w *worker) handOff(ctx context.Context) {
	if w.cur.last == nil {
		return
	}
	w.full <- w.cur
	w.cur = nil
	select {
	case w.cur = <-w.free:
	case <-ctx.Done():
	}
}

// insert writes blocks in order until full is closed.
func (w *worker) insert(ctx context.Context) {
	for b := range w.full {
		w.write(ctx, b)
		w.free <- b
	}
}

func (w *worker) handle(ctx context.Context, msg jetstream.Msg) {
	w.in.metrics.MessagesIn.WithLabelValues(w.kind.String()).Inc()
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to order or acknowledge.
		w.logErr(err, "message without metadata")
		return
	}
	if w.resync {
		return // the rest of this fetch comes again from the new consumer
	}
	// The consumer is made afresh (consumerFrom), so its first delivery
	// is number 1: one that is not means deliveries went astray before
	// the first arrived (a fetch the client had given up on, a consumer
	// leader that changed during it), and AckAll on what follows would
	// acknowledge them away unstored.
	if meta.Sequence.Consumer != w.dseq+1 {
		w.log.Warn().Uint64("expected", w.dseq+1).Uint64("got", meta.Sequence.Consumer).Uint64("stream_seq", meta.Sequence.Stream).
			Msg("deliveries out of order (a JetStream node failed over): resyncing from the stored watermark")
		w.resync = true
		return
	}
	w.dseq = meta.Sequence.Consumer
	w.cur.last = msg
	seq := meta.Sequence.Stream
	w.in.metrics.ConsumerLag.WithLabelValues(w.kind.String()).Set(float64(meta.NumPending))
	if seq <= w.lastSeq {
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
	w.cur.rows.Append(w.ev, schemas.Position{Epoch: w.epoch, Seq: seq})
	w.lastSeq, w.cur.lastSeq = seq, seq
	w.cur.stamps = append(w.cur.stamps, meta.Timestamp.UnixNano())
	if w.cur.devices != nil {
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
	w.cur.devices.Add(o, d, ts)
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
		if !sleep.Ctx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// write stores block b, retrying with backoff while the store fails, then
// acknowledges everything up to its last message. When ctx ends first, b
// stays unacknowledged (redelivered to the next ingest).
func (w *worker) write(ctx context.Context, b *block) {
	defer func() {
		b.rows.Table().Reset()
		if b.devices != nil {
			b.devices.Table().Reset()
		}
		b.last = nil
		b.stamps = b.stamps[:0]
	}()
	if b.last == nil || w.lost.Load() {
		return
	}
	t := b.rows.Table()
	if t.Rows() > 0 {
		// In the table's sort-key order: MergeTree then skips its own,
		// far costlier sort (schemas/sort.go).
		out, err := w.sorter.Sort(t)
		if err != nil {
			w.logErr(err, "sorting rows failed; writing them unsorted")
			out = t
		}
		if !w.retry(ctx, func(ctx context.Context) error { return w.in.sink.Write(ctx, out) }, w.table, t.Rows()) {
			return
		}
		w.wm = b.lastSeq
		w.in.metrics.Watermark.WithLabelValues(w.table).Set(float64(w.wm))
	}
	// Identities are idempotent (ReplacingMergeTree): retried on their own.
	if b.devices != nil && b.devices.Table().Rows() > 0 {
		if !w.retry(ctx, func(ctx context.Context) error { return w.in.sink.Write(ctx, b.devices.Table()) }, schemas.TableDevice, b.devices.Table().Rows()) {
			return
		}
	}
	now := time.Now().UnixNano()
	h := w.in.metrics.EndToEnd.WithLabelValues(w.kind.String())
	for _, st := range b.stamps {
		h.Observe(float64(now-st) / 1e9)
	}
	if err := b.last.Ack(); err != nil {
		// Harmless: the messages will be redelivered and skipped.
		w.logErr(err, "ack failed")
	}
}

// owns reports whether the worker may still store and acknowledge: always
// unless shared, and then while its lease is fresh. Once not, never again.
func (w *worker) owns() bool {
	if w.lost.Load() {
		return false
	}
	if w.limit != nil && !time.Now().Before(w.limit()) {
		w.lost.Store(true)
		w.log.Warn().Msg("lease not renewed in time: storing nothing more (its next holder resumes from the store's watermark)")
		return false
	}
	return true
}

// retry runs write until it succeeds (true), ctx ends or the worker loses
// its lease (false). A shared worker's writes are bounded by its lease.
func (w *worker) retry(ctx context.Context, write func(context.Context) error, table string, rows int) bool {
	backoff := 200 * time.Millisecond
	if w.limit != nil {
		ctx = fence.With(ctx, w.limit)
	}
	for {
		if !w.owns() {
			return false
		}
		start := time.Now()
		err := write(ctx)
		if err == nil {
			w.in.metrics.InsertSeconds.WithLabelValues(table).Observe(time.Since(start).Seconds())
			w.in.metrics.RowsWritten.WithLabelValues(table).Add(float64(rows))
			return true
		}
		w.in.metrics.InsertErrors.WithLabelValues(table).Inc()
		w.logErr(err, "store write failed; retrying")
		if !sleep.Ctx(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (w *worker) logErr(err error, msg string) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if time.Since(w.lastErrLog) < 5*time.Second {
		return
	}
	w.lastErrLog = time.Now()
	w.log.Warn().Err(err).Msg(msg)
}
