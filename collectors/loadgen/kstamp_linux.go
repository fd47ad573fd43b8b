//go:build linux

package loadgen

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stampConn is a TCP connection whose reads carry the kernel's receive time
// of the data (SO_TIMESTAMPNS, CLOCK_REALTIME): when the bytes reached this
// host, not when this process got round to reading them.
//
// Linux stamps a TCP read with the time of the last segment it took, and a
// segment that arrives while earlier data still waits unread is merged
// into it, the merged data taking the newer time (tcp_try_coalesce). So a
// read's time is exact for the last line it completes, and only an upper
// bound for earlier lines in the same read: a reader that keeps within one
// event of each stream gets exact times, one that falls behind gets
// bounds, and says so (see KernelStamp).
type stampConn struct {
	*net.TCPConn
	raw   syscall.RawConn
	oob   []byte
	last  atomic.Int64  // receive time of the latest data read, ns since the epoch; 0: none yet
	seq   atomic.Uint64 // reads that returned data
	clean atomic.Bool   // the latest read ended at a line's end (a TLS record's end)
	frame streamFrame
}

// Linux stamps received packets only while some socket on the host asks
// for stamps, and it turns that on through a deferred work item when the
// first such socket appears: packets that arrive in between carry no stamp.
// Every stamping socket closing turns it off again. A run's first tokens,
// or those after all connections were closed, would fall back to
// user-space stamps (31 of 200 first reads on fresh connections did here). The
// process therefore keeps one stamping socket open for its lifetime and,
// once, waits until a loopback segment arrives stamped.
var (
	holdOnce sync.Once
	held     net.PacketConn
)

// holdKernelStamps keeps kernel receive stamping on for this process and
// returns once it is in effect (or after 200 ms; the fallback covers a
// host that never turns it on).
func holdKernelStamps() {
	holdOnce.Do(func() {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return
		}
		if raw, err := u.(*net.UDPConn).SyscallConn(); err != nil || raw.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		}) != nil || err != nil {
			u.Close()
			return
		}
		held = u
		waitStamped(200 * time.Millisecond)
	})
}

// waitStamped sends single bytes over a loopback TCP connection until one
// arrives with a kernel receive time, or until max has passed.
func waitStamped(max time.Duration) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return
	}
	defer s.Close()
	sc, ok := kernelStamped(c).(*stampConn)
	if !ok {
		return
	}
	b := make([]byte, 1)
	for end := time.Now().Add(max); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if _, err := s.Write(b); err != nil {
			return
		}
		if _, err := sc.Read(b); err != nil {
			return
		}
		if ts, _, _ := sc.KernelStamp(); ts > 0 {
			return
		}
	}
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

// Read reads with recvmsg and keeps the data's kernel receive time. The
// message header and control buffer are the connection's own (one reader:
// the transport's), so a read allocates nothing.
func (c *stampConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &c.oob[0]}
	msg.SetControllen(len(c.oob))
	var n uintptr
	var errno syscall.Errno
	err := c.raw.Read(func(fd uintptr) bool {
		msg.SetControllen(len(c.oob))
		n, _, errno = syscall.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
		return errno != unix.EAGAIN && errno != unix.EINTR
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	c.clean.Store(c.frame.endsClean(p[:n]))
	c.last.Store(receiveTime(c.oob[:msg.Controllen]))
	c.seq.Add(1)
	return int(n), nil
}

// KernelStamp returns the kernel receive time of the latest data read (0:
// none), a number that changes with every read, and whether that read
// ended at the end of a line (of a TLS record): its time is then exact for
// the last line it completed.
func (c *stampConn) KernelStamp() (ts int64, read uint64, clean bool) {
	return c.last.Load(), c.seq.Load(), c.clean.Load()
}

// receiveTime returns the SCM_TIMESTAMPNS of a recvmsg's control data,
// walking the messages in place.
func receiveTime(oob []byte) int64 {
	hdr := int(unsafe.Sizeof(unix.Cmsghdr{}))
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l-hdr >= int(unsafe.Sizeof(unix.Timespec{})) {
			return (*unix.Timespec)(unsafe.Pointer(&oob[hdr])).Nano()
		}
		oob = oob[min(unix.CmsgSpace(l-hdr), len(oob)):]
	}
	return 0
}
