package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestFIFOAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := s.Append(fmt.Sprintf("lem.v1.power.h.%d", i%3), fmt.Sprint("id", i), []byte(fmt.Sprint("data", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = Open(dir, 1<<20) // as after an agent restart
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.Stats(); n != 100 {
		t.Fatalf("%d records after reopen", n)
	}
	var got []string
	n, err := s.Drain(func(subj, id string, data []byte) error { got = append(got, id+"="+string(data)); return nil })
	if err != nil || n != 100 {
		t.Fatalf("drained %d: %v", n, err)
	}
	for i, g := range got {
		if g != fmt.Sprintf("id%d=data%d", i, i) {
			t.Fatalf("record %d: %s", i, g)
		}
	}
	if n, b, _ := s.Stats(); n != 0 || b != 0 {
		t.Fatalf("left %d records, %d bytes", n, b)
	}
}

func TestFullDropsOldestAndCounts(t *testing.T) {
	s, _ := Open(t.TempDir(), 64<<10*4) // 4 segments of 64 KiB
	data := make([]byte, 1000)
	for i := 0; i < 1000; i++ {
		if err := s.Append("s", fmt.Sprint(i), data); err != nil {
			t.Fatal(err)
		}
	}
	n, b, dropped := s.Stats()
	if b > 64<<10*4 || dropped == 0 || int64(dropped)+n != 1000 {
		t.Fatalf("held %d records / %d bytes, dropped %d", n, b, dropped)
	}
	first := ""
	s.Drain(func(_, id string, _ []byte) error {
		if first == "" {
			first = id
		}
		return nil
	})
	if first != fmt.Sprint(dropped) {
		t.Fatalf("oldest kept is %s, want %d (oldest dropped first)", first, dropped)
	}
}

func TestDrainStopsOnErrorAndResumes(t *testing.T) {
	s, _ := Open(t.TempDir(), 1<<20)
	for i := 0; i < 10; i++ {
		s.Append("s", fmt.Sprint(i), nil)
	}
	fail := errors.New("nats down")
	calls := 0
	_, err := s.Drain(func(string, string, []byte) error {
		calls++
		if calls == 5 {
			return fail
		}
		return nil
	})
	if !errors.Is(err, fail) {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	s.Drain(func(_, id string, _ []byte) error { seen[id] = true; return nil })
	if len(seen) != 10 {
		t.Fatalf("after resume %d distinct records, want all 10 (at-least-once)", len(seen))
	}
}

func TestTornTailIgnored(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, 1<<20)
	s.Append("s", "a", []byte("x"))
	s.Append("s", "b", []byte("y"))
	s.Close()
	seg := filepath.Join(dir, fmt.Sprintf("%020d.seg", 1))
	b, _ := os.ReadFile(seg)
	os.WriteFile(seg, b[:len(b)-2], 0o644) // crash mid-write
	s, _ = Open(dir, 1<<20)
	var ids []string
	s.Drain(func(_, id string, _ []byte) error { ids = append(ids, id); return nil })
	if len(ids) != 1 || ids[0] != "a" {
		t.Fatalf("%v", ids)
	}
}
