// Package spool is a bounded, file-backed FIFO of messages that could not be
// published (NATS unreachable). It survives a restart of the process; when
// full it drops the oldest segment and counts what it dropped.
//
// Layout: <dir>/<seq>.seg files of records
// [crc32 (4 bytes LE)][uvarint len][payload], payload = uvarint-prefixed
// subject, message id and data. A torn record at the end of a segment (crash
// mid-write) is detected by its checksum and ignored.
package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Spool is safe for concurrent use.
type Spool struct {
	dir      string
	maxBytes int64
	segBytes int64

	mu      sync.Mutex
	segs    []segment // oldest first; the last one is being written
	cur     *os.File
	total   int64
	dropped uint64 // records dropped because the spool was full
	records int64
}

type segment struct {
	seq     uint64
	size    int64
	records int64
}

// Open opens (or creates) a spool in dir holding at most maxBytes.
func Open(dir string, maxBytes int64) (*Spool, error) {
	if maxBytes <= 0 {
		maxBytes = 256 << 20
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, segBytes: max(maxBytes/16, 64<<10)}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		n, size, err := countRecords(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, segment{seq: seq, size: size, records: n})
		s.total += size
		s.records += n
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].seq < s.segs[j].seq })
	return s, nil
}

func (s *Spool) path(seq uint64) string { return filepath.Join(s.dir, fmt.Sprintf("%020d.seg", seq)) }

// Append adds one message.
func (s *Spool) Append(subject, msgID string, data []byte) error {
	payload := binary.AppendUvarint(nil, uint64(len(subject)))
	payload = append(payload, subject...)
	payload = binary.AppendUvarint(payload, uint64(len(msgID)))
	payload = append(payload, msgID...)
	payload = binary.AppendUvarint(payload, uint64(len(data)))
	payload = append(payload, data...)
	rec := binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(payload))
	rec = binary.AppendUvarint(rec, uint64(len(payload)))
	rec = append(rec, payload...)

	s.mu.Lock()
	defer s.mu.Unlock()
	if int64(len(rec)) > s.maxBytes {
		s.dropped++
		return fmt.Errorf("spool: %d-byte message exceeds the spool size", len(rec))
	}
	if s.cur == nil || s.segs[len(s.segs)-1].size+int64(len(rec)) > s.segBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	for s.total+int64(len(rec)) > s.maxBytes && len(s.segs) > 1 {
		s.dropOldest()
	}
	if _, err := s.cur.Write(rec); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	last := &s.segs[len(s.segs)-1]
	last.size += int64(len(rec))
	last.records++
	s.total += int64(len(rec))
	s.records++
	return nil
}

func (s *Spool) rotate() error {
	if s.cur != nil {
		s.cur.Close()
	}
	var seq uint64 = 1
	if len(s.segs) > 0 {
		seq = s.segs[len(s.segs)-1].seq + 1
	}
	f, err := os.OpenFile(s.path(seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.cur = f
	s.segs = append(s.segs, segment{seq: seq})
	return nil
}

func (s *Spool) dropOldest() {
	old := s.segs[0]
	os.Remove(s.path(old.seq))
	s.segs = s.segs[1:]
	s.total -= old.size
	s.records -= old.records
	s.dropped += uint64(old.records)
}

// Stats returns the records and bytes held and the records dropped so far.
func (s *Spool) Stats() (records, bytes int64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records, s.total, s.dropped
}

// Drain hands every held message to publish, oldest first, removing each
// segment once all its records were published. It stops at the first
// publish error (the segment stays; its already-published records will be
// offered again, so publish must be idempotent: JetStream's duplicate window
// drops repeated message ids).
func (s *Spool) Drain(publish func(subject, msgID string, data []byte) error) (int, error) {
	n := 0
	for {
		s.mu.Lock()
		if len(s.segs) == 0 {
			s.mu.Unlock()
			return n, nil
		}
		seg := s.segs[0]
		if len(s.segs) == 1 && s.cur != nil {
			// Seal the segment being written so Append starts a new one.
			s.cur.Close()
			s.cur = nil
		}
		s.mu.Unlock()
		err := readRecords(s.path(seg.seq), func(subj, id string, data []byte) error {
			if err := publish(subj, id, data); err != nil {
				return err
			}
			n++
			return nil
		})
		if err != nil {
			return n, err
		}
		s.mu.Lock()
		if len(s.segs) > 0 && s.segs[0].seq == seg.seq {
			os.Remove(s.path(seg.seq))
			s.segs = s.segs[1:]
			s.total -= seg.size
			s.records -= seg.records
		}
		s.mu.Unlock()
	}
}

// Close closes the segment being written.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		err := s.cur.Close()
		s.cur = nil
		return err
	}
	return nil
}

var errTorn = errors.New("torn record")

func readRecords(path string, fn func(subj, id string, data []byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		payload, err := nextRecord(r)
		if err == io.EOF || errors.Is(err, errTorn) {
			return nil
		}
		if err != nil {
			return err
		}
		subj, rest, ok1 := field(payload)
		id, rest, ok2 := field(rest)
		data, _, ok3 := field(rest)
		if !ok1 || !ok2 || !ok3 {
			return nil // corrupt tail: stop here
		}
		if err := fn(string(subj), string(id), data); err != nil {
			return err
		}
	}
}

func nextRecord(r *bufio.Reader) ([]byte, error) {
	var sum [4]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, errTorn
		}
		return nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<30 {
		return nil, errTorn
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, errTorn
	}
	if crc32.ChecksumIEEE(payload) != binary.LittleEndian.Uint32(sum[:]) {
		return nil, errTorn
	}
	return payload, nil
}

func field(b []byte) ([]byte, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

func countRecords(path string) (n, size int64, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	err = readRecords(path, func(string, string, []byte) error { n++; return nil })
	return n, st.Size(), err
}
