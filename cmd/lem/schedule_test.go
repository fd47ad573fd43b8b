package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestNextAt(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	ats, err := parseTimesOfDay("14:30, 02:00")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"2026-11-27T01:59:00": "2026-11-27T02:00:00",
		"2026-11-27T02:00:00": "2026-11-27T14:30:00",
		"2026-11-27T23:00:00": "2026-11-28T02:00:00",
	}
	for now, want := range cases {
		n, _ := time.ParseInLocation("2006-01-02T15:04:05", now, loc)
		if got := nextAt(n, ats).Format("2006-01-02T15:04:05"); got != want {
			t.Errorf("after %s: %s, want %s", now, got, want)
		}
	}
	if _, err := parseTimesOfDay("25:00"); err == nil {
		t.Error("25:00 accepted")
	}
}

// A failing execution is logged and the schedule goes on, on its grid.
func TestScheduleKeepsGoing(t *testing.T) {
	var starts []time.Time
	err := schedule(context.Background(), 150*time.Millisecond, nil, 3, zerolog.Nop(), func(context.Context) error {
		starts = append(starts, time.Now())
		if len(starts) == 1 {
			return errors.New("backend did not start")
		}
		return nil
	})
	if err != nil || len(starts) != 3 {
		t.Fatalf("%v, %d executions", err, len(starts))
	}
	if d := starts[2].Sub(starts[0]); d < 290*time.Millisecond {
		t.Fatalf("three executions within %v: not on a 150 ms grid", d)
	}
}
