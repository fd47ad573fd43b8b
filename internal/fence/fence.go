// Package fence bounds a store write by a lease (ADR 0019): a writer that
// holds a lease puts the lease's freshness limit in the write's context,
// and the stores check it at the last moment they can — a ClickHouse
// connection before every chunk it sends, the Parquet store before it
// renames a finished file into place — so that a writer frozen mid-write
// (SIGSTOP, a stalled VM) and thawed after its lease passed on cannot
// complete the write: its connection is closed and the server drops the
// unfinished insert.
package fence

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrExpired is returned by a write attempted after its fence's limit.
var ErrExpired = errors.New("fence: the lease this write depends on may have passed to another process")

type key struct{}

// With returns ctx carrying limit: the time before which a write under
// ctx may still complete. limit is called at each check, so a lease
// renewed meanwhile extends it.
func With(ctx context.Context, limit func() time.Time) context.Context {
	return context.WithValue(ctx, key{}, limit)
}

// From returns ctx's limit, if it carries one.
func From(ctx context.Context) (func() time.Time, bool) {
	l, ok := ctx.Value(key{}).(func() time.Time)
	return l, ok && l != nil
}

// Check returns ErrExpired (with how late) when ctx carries a limit that
// has passed, nil otherwise.
func Check(ctx context.Context) error {
	if l, ok := From(ctx); ok {
		return check(l)
	}
	return nil
}

func check(limit func() time.Time) error {
	if late := time.Since(limit()); late >= 0 {
		return fmt.Errorf("%w (%v past its limit)", ErrExpired, late.Round(time.Millisecond))
	}
	return nil
}

// chunk bounds what one Write hands the kernel after a check: a sender
// frozen inside a write completes at most this much once thawed.
const chunk = 64 << 10

// Conn returns c whose writes are checked against limit before every
// chunk: once the limit has passed, Write closes c (the server sees the
// connection end mid-insert and drops it) and returns ErrExpired.
func Conn(c net.Conn, limit func() time.Time) net.Conn { return &conn{Conn: c, limit: limit} }

type conn struct {
	net.Conn
	limit func() time.Time
}

func (c *conn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := check(c.limit); err != nil {
			c.Conn.Close()
			return n, err
		}
		k, err := c.Conn.Write(p[:min(len(p), chunk)])
		n += k
		p = p[k:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
