package sleep

import (
	"context"
	"testing"
	"time"
)

func TestCtx(t *testing.T) {
	if !Ctx(context.Background(), time.Millisecond) || !Ctx(context.Background(), 0) {
		t.Fatal("a live context's sleep did not complete")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Ctx(ctx, time.Hour) || Ctx(ctx, 0) {
		t.Fatal("a cancelled context's sleep completed")
	}
	if time.Since(start) > time.Second {
		t.Fatal("cancelled sleep waited")
	}
}
