package loadgen

// streamFrame follows a connection's bytes to tell whether a read ended
// where a line ends: after '\n' in plaintext HTTP (Server-Sent Events and
// the chunked framing around them), at a record's end in TLS, where the
// lines inside are not visible but each record is one server write. The
// first byte decides which: a TLS record type (20–23) or an HTTP response.
type streamFrame struct {
	started, tls bool
	left         int     // TLS: bytes of the current record's body still to come
	hdr          [5]byte // TLS: the current record's header, nh bytes of it seen
	nh           int
}

// endsClean consumes b, the next bytes read, and reports whether they end
// at a line's (a record's) end.
func (f *streamFrame) endsClean(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if !f.started {
		f.started, f.tls = true, b[0] >= 20 && b[0] <= 23
	}
	if !f.tls {
		return b[len(b)-1] == '\n'
	}
	for len(b) > 0 {
		if f.left > 0 {
			k := min(f.left, len(b))
			b, f.left = b[k:], f.left-k
			continue
		}
		// type(1) version(2) length(2), then length bytes.
		k := copy(f.hdr[f.nh:], b)
		b, f.nh = b[k:], f.nh+k
		if f.nh == len(f.hdr) {
			f.nh, f.left = 0, int(f.hdr[3])<<8|int(f.hdr[4])
		}
	}
	return f.left == 0 && f.nh == 0
}
