package fence

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	if err := Check(context.Background()); err != nil {
		t.Fatalf("no fence: %v", err)
	}
	limit := time.Now().Add(time.Hour)
	ctx := With(context.Background(), func() time.Time { return limit })
	if err := Check(ctx); err != nil {
		t.Fatalf("an hour ahead: %v", err)
	}
	limit = time.Now().Add(-time.Second) // the func is read at each check
	if err := Check(ctx); !errors.Is(err, ErrExpired) {
		t.Fatalf("a second past: %v", err)
	}
}

// Conn stops between chunks once the limit passes, and closes the
// connection so that the peer sees the write end unfinished.
func TestConnStopsMidWrite(t *testing.T) {
	a, b := net.Pipe()
	var checks int
	limit := func() time.Time {
		checks++
		if checks > 2 {
			return time.Now().Add(-time.Millisecond)
		}
		return time.Now().Add(time.Hour)
	}
	got := make(chan int)
	go func() {
		n, _ := io.Copy(io.Discard, b)
		got <- int(n)
	}()
	n, err := Conn(a, limit).Write(make([]byte, 5*chunk))
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("err %v, want ErrExpired", err)
	}
	if n != 2*chunk {
		t.Fatalf("wrote %d bytes, want %d (two chunks before the limit)", n, 2*chunk)
	}
	if r := <-got; r != 2*chunk {
		t.Fatalf("peer read %d bytes then EOF, want %d", r, 2*chunk)
	}
}
