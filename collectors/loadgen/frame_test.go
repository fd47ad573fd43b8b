package loadgen

import "testing"

// A read ends clean exactly at a record's end, wherever the reads split
// the records (headers included), and at a line's end in plaintext.
func TestStreamFrameEndsClean(t *testing.T) {
	var stream []byte
	ends := map[int]bool{}
	for _, n := range []int{0, 1, 4, 300, 5, 17000} {
		stream = append(stream, 23, 3, 3, byte(n>>8), byte(n))
		stream = append(stream, make([]byte, n)...)
		ends[len(stream)] = true
	}
	for i := 1; i < len(stream); i += 1 + i/50 {
		for j := i + 1; j <= len(stream); j += 1 + j/40 {
			var f streamFrame
			if got := f.endsClean(stream[:i]); got != ends[i] {
				t.Fatalf("read [0,%d): clean %v, want %v", i, got, ends[i])
			}
			if got := f.endsClean(stream[i:j]); got != ends[j] {
				t.Fatalf("reads split at %d, second to %d: clean %v, want %v", i, j, got, ends[j])
			}
		}
	}
	var f streamFrame
	for _, c := range []struct {
		read  string
		clean bool
	}{{"HTTP/1.1 200 OK\r\n\r\n", true}, {"2c\r\ndata: {\"a\"", false}, {":1}\n\n\r\n", true}, {"data: x\n", true}} {
		if got := f.endsClean([]byte(c.read)); got != c.clean {
			t.Errorf("%q: clean %v, want %v", c.read, got, c.clean)
		}
	}
}
