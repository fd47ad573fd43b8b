//go:build linux

package loadgen

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxStampedRead caps each read of a kernel-stamped connection. A read
// that drains several queued segments carries the last one's receive time
// (Linux stamps a TCP read with its last skb), so a reader that fell
// behind would give earlier events a later time; a small read keeps each
// event's stamp to the segment that carried it (an SSE event is 100–400
// bytes) at the cost of more system calls.
const MaxStampedRead = 512

// stampConn is a TCP connection whose reads carry the kernel's receive time
// of the data (SO_TIMESTAMPNS, CLOCK_REALTIME): when the bytes reached this
// host, not when this process got round to reading them.
type stampConn struct {
	*net.TCPConn
	raw  syscall.RawConn
	oob  []byte
	last atomic.Int64 // receive time of the latest data read, ns since the epoch; 0: none yet
}

// kernelStamped enables kernel receive stamps on c where the kernel gives
// them; otherwise it returns c unchanged (user-space stamps then).
func kernelStamped(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) }); err != nil || serr != nil {
		return c
	}
	return &stampConn{TCPConn: tc, raw: raw, oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
}

// Read reads with recvmsg and keeps the data's kernel receive time.
func (c *stampConn) Read(p []byte) (int, error) {
	if len(p) > MaxStampedRead {
		p = p[:MaxStampedRead]
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, c.oob, 0)
		return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EINTR)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	if ts := receiveTime(c.oob[:oobn]); ts > 0 {
		c.last.Store(ts)
	}
	return n, nil
}

// KernelStamp is the kernel receive time of the latest data read (0: none).
func (c *stampConn) KernelStamp() int64 { return c.last.Load() }

// receiveTime returns the SCM_TIMESTAMPNS of a recvmsg's control data.
func receiveTime(oob []byte) int64 {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return ts.Nano()
		}
	}
	return 0
}
