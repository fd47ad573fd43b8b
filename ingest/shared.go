package ingest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/schemas"
)

// BucketLeases holds shared ingest's leases and members (ADR 0017):
// k.<prefix>.<kind> names the process ingesting that kind, or says
// "released"; m.<prefix>.<instance> is renewed by each process alive.
const BucketLeases = "LEM_INGEST_LEASES"

// released is a lease's value after its holder stopped cleanly: every
// block it took is stored and acknowledged, so the next holder starts at
// once.
const released = "released"

// lease is one kind held by this process.
type lease struct {
	kind      schemas.Kind
	rev       uint64       // the key's revision after our last write
	releasing bool         // given back: released once its worker stopped
	renewed   atomic.Int64 // when our last write was acknowledged, unix ns
	cancel    context.CancelFunc
	done      chan struct{}
	w         atomic.Pointer[worker]
}

var unsafeKey = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// keyPart makes s a KV key token.
func keyPart(s string) string { return unsafeKey.ReplaceAllString(s, "_") }

func (in *Ingester) leaseKey(k schemas.Kind) string {
	return "k." + keyPart(in.cfg.ConsumerPrefix) + "." + k.String()
}

// memberKey is this process's key; members matches every sharer's.
func (in *Ingester) memberKey() string { return in.members() + keyPart(in.cfg.Instance) }

func (in *Ingester) members() string { return "m." + keyPart(in.cfg.ConsumerPrefix) + "." }

// runShared ingests the kinds whose leases this process holds, taking its
// share of them (the kinds over the processes alive, rounded up) and
// renewing them every LeaseTTL/4, until ctx ends; then it stores what its
// workers hold and releases their leases.
func (in *Ingester) runShared(ctx context.Context, epoch int64) error {
	ttl := in.cfg.LeaseTTL
	var kv jetstream.KeyValue
	err := in.retry(ctx, "making the lease bucket", func() (err error) {
		kv, err = in.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketLeases,
			Description: "lem ingest: which process ingests which kind (ADR 0017)", TTL: ttl, Replicas: in.cfg.Replicas})
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("ingest: lease bucket: %w", err)
	}
	held := map[schemas.Kind]*lease{}
	in.log.Info().Str("instance", in.cfg.Instance).Dur("lease_ttl", ttl).Msg("shared ingest: taking a share of the kinds")
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	for ctx.Err() == nil {
		if _, err := kv.Put(ctx, in.memberKey(), []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
			in.log.Warn().Err(err).Msg("shared ingest: announcing this process failed")
		}
		in.renew(ctx, kv, held)
		in.balance(ctx, kv, epoch, held)
		in.metrics.Leases.Set(float64(len(held)))
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	// Stop cleanly: each worker stores and acknowledges what it took
	// (within shutdownGrace) while its lease is still renewed, then the
	// lease says released.
	bg := context.Background()
	for _, l := range held {
		l.giveBack()
	}
	for len(held) > 0 {
		in.renew(bg, kv, held)
		if len(held) > 0 {
			<-tick.C
		}
	}
	in.metrics.Leases.Set(0)
	kv.Delete(bg, in.memberKey())
	return nil
}

// giveBack stops l's worker cleanly; renew releases the lease once it has.
func (l *lease) giveBack() {
	l.releasing = true
	l.cancel()
}

// renew renews what this process holds, releases what it gave back once
// its worker has stopped, and drops what it lost.
func (in *Ingester) renew(ctx context.Context, kv jetstream.KeyValue, held map[schemas.Kind]*lease) {
	ttl := in.cfg.LeaseTTL
	for k, l := range held {
		select {
		case <-l.done: // stopped: given back, or it lost the lease
			if l.releasing {
				in.release(ctx, kv, l)
			}
			delete(held, k)
			continue
		default:
		}
		rev, err := kv.Update(ctx, in.leaseKey(k), []byte(in.cfg.Instance), l.rev)
		switch {
		case err == nil:
			l.rev = rev
			l.renewed.Store(time.Now().UnixNano())
		case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) ||
			time.Since(time.Unix(0, l.renewed.Load())) > ttl/2:
			// Another process holds it now, or it may: the worker's fence
			// has stopped it storing; it ends without storing more.
			in.log.Warn().Err(err).Str("kind", k.String()).Msg("shared ingest: lease lost")
			if w := l.w.Load(); w != nil {
				w.lost.Store(true)
			}
			l.cancel()
			delete(held, k)
		default:
			in.log.Warn().Err(err).Str("kind", k.String()).Msg("shared ingest: renewing a lease failed; retrying")
		}
	}
}

// balance takes or gives back kinds toward this process's share: the
// kinds over the processes alive, rounded up.
func (in *Ingester) balance(ctx context.Context, kv jetstream.KeyValue, epoch int64, held map[schemas.Kind]*lease) {
	ttl := in.cfg.LeaseTTL
	members := 1
	if lister, err := kv.ListKeysFiltered(ctx, in.members()+"*"); err == nil {
		n := 0
		for range lister.Keys() {
			n++
		}
		members = max(n, 1)
	}
	share := (len(in.cfg.Kinds) + members - 1) / members
	n := 0 // held and not being given back
	for _, l := range held {
		if !l.releasing {
			n++
		}
	}
	// Give back beyond the share, last kinds first.
	for i := len(in.cfg.Kinds) - 1; i >= 0 && n > share; i-- {
		if l, ok := held[in.cfg.Kinds[i]]; ok && !l.releasing {
			l.giveBack()
			n--
		}
	}
	// Take free kinds up to the share.
	for _, k := range in.cfg.Kinds {
		if n >= share {
			break
		}
		if _, ok := held[k]; ok {
			continue
		}
		key := in.leaseKey(k)
		var rev uint64
		var settle time.Duration
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Never held, or its holder stopped renewing: that holder may
			// be cut off mid-insert, so wait until it has surely stopped.
			if rev, err = kv.Create(ctx, key, []byte(in.cfg.Instance)); err != nil {
				continue
			}
			settle = ttl
		case err == nil && string(e.Value()) == released:
			if rev, err = kv.Update(ctx, key, []byte(in.cfg.Instance), e.Revision()); err != nil {
				continue
			}
		default:
			continue // held by another process, or the bucket is not answering
		}
		l := &lease{kind: k, rev: rev, done: make(chan struct{})}
		l.renewed.Store(time.Now().UnixNano())
		wctx, cancel := context.WithCancel(ctx)
		l.cancel = cancel
		held[k] = l
		n++
		in.log.Info().Str("kind", k.String()).Dur("settle", settle).Msg("shared ingest: lease taken")
		limit := func() time.Time { return time.Unix(0, l.renewed.Load()).Add(ttl / 2) }
		go func() {
			defer close(l.done)
			select {
			case <-wctx.Done():
				return
			case <-time.After(settle):
			}
			w, err := in.startWorker(wctx, k, epoch, limit)
			if err != nil {
				if wctx.Err() == nil {
					in.log.Error().Err(err).Str("kind", k.String()).Msg("shared ingest: starting the worker failed")
				}
				return
			}
			l.w.Store(w)
			w.run(wctx)
		}()
	}
}

// release marks l's kind released after its worker stopped cleanly, so
// that the next holder starts without waiting out the lease.
func (in *Ingester) release(ctx context.Context, kv jetstream.KeyValue, l *lease) {
	if w := l.w.Load(); w != nil && w.lost.Load() {
		return // it stopped storing early: let the lease expire and settle
	}
	if _, err := kv.Update(ctx, in.leaseKey(l.kind), []byte(released), l.rev); err != nil {
		in.log.Warn().Err(err).Str("kind", l.kind.String()).Msg("shared ingest: releasing a lease failed; it expires")
		return
	}
	in.log.Info().Str("kind", l.kind.String()).Msg("shared ingest: lease released")
}
