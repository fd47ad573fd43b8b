//go:build linux

package pacedserver

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// arrivalListener accepts connections whose reads keep the kernel's
// receive time (SO_TIMESTAMPNS): when a request's bytes reached this host,
// before the server got round to reading them.
type arrivalListener struct{ net.Listener }

func listenArrivals(ln net.Listener) net.Listener { return arrivalListener{ln} }

func (l arrivalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) }); err != nil || serr != nil {
		return c, nil
	}
	return &arrivalConn{TCPConn: tc, raw: raw}, nil
}

type arrivalConn struct {
	*net.TCPConn
	raw  syscall.RawConn
	last atomic.Int64
}

// LastArrival is the kernel's receive time of the data of the latest read.
func (c *arrivalConn) LastArrival() int64 { return c.last.Load() }

func (c *arrivalConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	oob := make([]byte, 128)
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, oob, 0)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			c.last.Store((*unix.Timespec)(unsafe.Pointer(&m.Data[0])).Nano())
		}
	}
	return n, nil
}
