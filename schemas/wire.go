package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Decoding errors. Every decoding failure wraps ErrMalformed so that ingest
// can dead-letter it as permanent.
var (
	ErrMalformed = errors.New("malformed event")
	ErrMagic     = fmt.Errorf("%w: bad magic", ErrMalformed)
	ErrVersion   = fmt.Errorf("%w: unsupported wire version", ErrMalformed)
	ErrKind      = fmt.Errorf("%w: unexpected event kind", ErrMalformed)
	ErrTruncated = fmt.Errorf("%w: truncated", ErrMalformed)
	ErrTooLarge  = fmt.Errorf("%w: length over limit", ErrMalformed)
	ErrTrailing  = fmt.Errorf("%w: trailing bytes", ErrMalformed)
)

// Limits enforced by the decoder, so hostile input cannot make it allocate
// without bound.
const (
	HeaderSize             = 6
	MaxMessageSize         = 8 << 20 // bytes in one message
	MaxShortString         = 1 << 10 // identity strings: host, source, ids, names
	MaxLongString          = 1 << 20 // config and inventory JSON, error texts
	magic0, magic1, magic2 = 'L', 'E', 'M'
)

// Event is implemented by every batch type.
type Event interface {
	Kind() Kind
	// AppendWire appends the encoded message, header included, to dst and
	// returns the extended buffer. The event is not retained.
	AppendWire(dst []byte) []byte
	// DecodeWire replaces the event's contents with the message in b.
	// Slices of the event are reused; b is not retained.
	DecodeWire(b []byte) error
	// Validate reports semantically impossible content (negative power,
	// timestamps outside [minTS, maxTS], missing identity).
	Validate(minTS, maxTS int64) error
}

// PeekKind returns the kind of the encoded message b after checking the
// header.
func PeekKind(b []byte) (Kind, error) {
	if len(b) < HeaderSize {
		return 0, ErrTruncated
	}
	if b[0] != magic0 || b[1] != magic1 || b[2] != magic2 {
		return 0, ErrMagic
	}
	if b[3] != WireVersion {
		return 0, fmt.Errorf("%w %d", ErrVersion, b[3])
	}
	k := Kind(b[4])
	if specByKind[k] == nil {
		return 0, fmt.Errorf("%w %d", ErrKind, b[4])
	}
	return k, nil
}

// Decode decodes any message into a fresh event.
func Decode(b []byte) (Event, error) {
	k, err := PeekKind(b)
	if err != nil {
		return nil, err
	}
	ev, _ := New(k)
	if err := ev.DecodeWire(b); err != nil {
		return nil, err
	}
	return ev, nil
}

func appendHeader(dst []byte, k Kind) []byte {
	return append(dst, magic0, magic1, magic2, WireVersion, byte(k), 0)
}

// Header flags: optional trailing fields a kind gained within wire v1.
// Messages without the flag decode as before (the fields stay zero).
const (
	// flagServerTimings: each request carries the server's own queue,
	// prefill and decode times.
	flagServerTimings = 1 << 0
	// flagKernelStamps: each request carries how many of its chunks are
	// stamped with the kernel's receive time (absent in older batches: 0).
	flagKernelStamps = 1 << 1
	// flagSentKernel: each request says whether its send time is the
	// kernel's transmit stamp (absent in older batches: false).
	flagSentKernel = 1 << 2
)

func appendHeaderFlags(dst []byte, k Kind, flags byte) []byte {
	return append(dst, magic0, magic1, magic2, WireVersion, byte(k), flags)
}

func appendFloat(dst []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

func appendInt(dst []byte, v int64) []byte { return binary.AppendVarint(dst, v) }

func appendUint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func appendDevice(dst []byte, d *Device) []byte {
	dst = appendUint(dst, uint64(d.Index))
	dst = appendString(dst, d.UUID)
	dst = appendString(dst, d.Name)
	return appendString(dst, d.MIGParent)
}

func appendOrigin(dst []byte, o *Origin) []byte {
	dst = appendString(dst, o.Host)
	return appendString(dst, o.Source)
}

// reader decodes a message body. The first error sticks; later reads
// return zero values, so decoders check r.err once at the end.
type reader struct {
	b     []byte
	err   error
	flags byte
}

func newReader(b []byte, want Kind) (reader, error) {
	if len(b) > MaxMessageSize {
		return reader{}, fmt.Errorf("%w: %d-byte message", ErrTooLarge, len(b))
	}
	k, err := PeekKind(b)
	if err != nil {
		return reader{}, err
	}
	if k != want {
		return reader{}, fmt.Errorf("%w: got %s, want %s", ErrKind, k, want)
	}
	return reader{b: b[HeaderSize:], flags: b[HeaderSize-1]}, nil
}

func (r *reader) float() float64 {
	if len(r.b) < 8 {
		r.fail(ErrTruncated)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) int() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(ErrTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(ErrTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uint32() uint32 {
	v := r.uint()
	if v > 1<<32-1 {
		r.fail(fmt.Errorf("%w: %d does not fit 32 bits", ErrMalformed, v))
		return 0
	}
	return uint32(v)
}

func (r *reader) int32() int32 {
	v := r.int()
	if v < -1<<31 || v > 1<<31-1 {
		r.fail(fmt.Errorf("%w: %d does not fit 32 bits", ErrMalformed, v))
		return 0
	}
	return int32(v)
}

func (r *reader) bool() bool {
	if len(r.b) == 0 {
		r.fail(ErrTruncated)
		return false
	}
	c := r.b[0]
	r.b = r.b[1:]
	if c > 1 {
		r.fail(fmt.Errorf("%w: bool byte %d", ErrMalformed, c))
		return false
	}
	return c == 1
}

func (r *reader) uint8() uint8 {
	if len(r.b) == 0 {
		r.fail(ErrTruncated)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) string(limit int) string {
	n := r.uint()
	if r.err != nil {
		return ""
	}
	if n > uint64(limit) {
		r.fail(fmt.Errorf("%w: %d-byte string (limit %d)", ErrTooLarge, n, limit))
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(ErrTruncated)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a slice length and checks it against the bytes left, given
// the minimum encoded size of one element, so a hostile count cannot make
// the decoder allocate more than the message could hold.
func (r *reader) count(minElem int) int {
	n := r.uint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/minElem) {
		r.fail(fmt.Errorf("%w: count %d exceeds message", ErrTruncated, n))
		return 0
	}
	return int(n)
}

func (r *reader) device(d *Device) {
	d.Index = r.uint32()
	d.UUID = r.string(MaxShortString)
	d.Name = r.string(MaxShortString)
	d.MIGParent = r.string(MaxShortString)
}

func (r *reader) origin(o *Origin) {
	o.Host = r.string(MaxShortString)
	o.Source = r.string(MaxShortString)
}

func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes", ErrTrailing, len(r.b))
	}
	return nil
}

// grow returns s resized to n, reusing its capacity.
func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}
