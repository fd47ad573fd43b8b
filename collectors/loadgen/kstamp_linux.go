//go:build linux

package loadgen

import (
	"context"
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
	// rc, where the receive reactor runs (cgo), reads the connection on
	// the reactor's thread; nil: this connection's reader reads it.
	rc receiver

	// Transmit stamps (SO_TIMESTAMPING, software): the kernel's time of
	// the last byte of each write leaving for the device, delivered on the
	// socket's error queue and matched by byte offset.
	tx      bool
	txMu    sync.Mutex
	txOOB   []byte
	written uint64 // bytes written so far
	txWant  int64  // offset of the last byte of the latest write; -1: none
	sent    int64  // transmit time of that byte (0: not seen yet)
	// A deadline the next write waits for (DoAt), on holdClock.
	holdUntil int64
	holdClock Clock
}

// HoldNextWrite makes the next write wait until deadline (clk's time):
// the request then leaves from the transport's writer right at its
// deadline, whatever the hops before took.
func (c *stampConn) HoldNextWrite(deadline int64, clk Clock) {
	c.txMu.Lock()
	c.holdUntil, c.holdClock = deadline, clk
	c.txMu.Unlock()
}

// Linux stamps received packets only while some socket on the host asks
// for stamps, and it turns that on through a deferred work item when the
// first such socket appears: packets that arrive in between carry no stamp.
// Every stamping socket closing turns it off again. A run's first tokens,
// or those after all connections were closed, would fall back to
// user-space stamps (TestFirstReadOfFreshConnectionKernelStamped's first
// connection did without what follows). The process therefore keeps one stamping socket open for its lifetime and,
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
	defer sc.Close() // takes it off the receive reactor before the descriptor closes
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
	// Room for the receive time and, where the kernel cannot be told to
	// leave it out (before Linux 6.3), the SO_TIMESTAMPING copy of it.
	sc := &stampConn{TCPConn: tc, raw: raw, oob: make([]byte, 128), txWant: -1}
	sc.tx = enableTransmitStamps(raw)
	if openReceiver != nil && Reactor {
		_ = raw.Control(func(fd uintptr) { sc.rc = openReceiver(int(fd)) })
	}
	if sc.tx {
		sc.txOOB = make([]byte, 256)
	}
	return sc
}

// sofRxFilter is SOF_TIMESTAMPING_OPT_RX_FILTER (Linux 6.3): reads carry
// no SCM_TIMESTAMPING copy of their receive time.
const sofRxFilter = 1 << 17

// enableTransmitStamps asks for a software transmit stamp of the last byte
// of every write, reported by byte offset (OPT_ID, counted from this
// connection's first byte: OPT_ID_TCP where the kernel knows it) without
// the data looped back (OPT_TSONLY). It reports whether the kernel agreed.
func enableTransmitStamps(raw syscall.RawConn) bool {
	base := unix.SOF_TIMESTAMPING_TX_SOFTWARE | unix.SOF_TIMESTAMPING_SOFTWARE | unix.SOF_TIMESTAMPING_OPT_ID | unix.SOF_TIMESTAMPING_OPT_TSONLY
	for _, extra := range []int{unix.SOF_TIMESTAMPING_OPT_ID_TCP | sofRxFilter, unix.SOF_TIMESTAMPING_OPT_ID_TCP, 0} {
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPING, base|extra)
		}); err != nil {
			return false
		}
		if serr == nil {
			return true
		}
	}
	return false
}

// Write writes p and then collects the transmit stamps the kernel has
// queued (on loopback and most devices the stamp is taken during the
// write). Draining the error queue at once also keeps it from waking the
// reader with nothing but an error event.
func (c *stampConn) Write(p []byte) (int, error) {
	c.txMu.Lock()
	until, clk := c.holdUntil, c.holdClock
	c.holdUntil = 0
	c.txMu.Unlock()
	if c.tx && len(p) > 0 {
		// Which byte's stamp to wait for is set before the system call:
		// the response can arrive, and the reader ask for the stamp,
		// before this goroutine runs again after it.
		c.txMu.Lock()
		c.txWant, c.sent = int64(c.written+uint64(len(p))-1), 0
		c.txMu.Unlock()
	}
	var n int
	var err error
	if until != 0 {
		n, err = c.writeAt(p, until, clk)
	} else {
		n, err = c.TCPConn.Write(p)
	}
	if c.tx && n > 0 {
		c.txMu.Lock()
		c.written += uint64(n)
		if n != len(p) {
			c.txWant = int64(c.written - 1)
		}
		c.drainTransmitLocked()
		c.txMu.Unlock()
	}
	return n, err
}

// writeAt writes p at the deadline until (clk's time): on the reactor's
// send thread where there is one, else from this goroutine after a spin.
func (c *stampConn) writeAt(p []byte, until int64, clk Clock) (int, error) {
	if d := time.Duration(until - clk.Now()); c.rc != nil && d > 0 && len(p) > 0 {
		if n, ok, err := c.rc.sendAt(p, d); ok {
			if err != nil || n == len(p) {
				return n, err
			}
			m, err := c.TCPConn.Write(p[n:])
			return n + m, err
		}
	}
	pace(context.Background(), clk, until, false)
	return c.TCPConn.Write(p)
}

// SendStamp is the kernel's transmit time of the last byte written (0:
// none seen, or no transmit stamps on this connection).
func (c *stampConn) SendStamp() int64 {
	if !c.tx {
		return 0
	}
	c.txMu.Lock()
	defer c.txMu.Unlock()
	if c.sent == 0 && c.txWant >= 0 {
		c.drainTransmitLocked()
	}
	return c.sent
}

// drainTransmitLocked reads the error queue without waiting and keeps the
// stamp of the latest write's last byte.
func (c *stampConn) drainTransmitLocked() {
	_ = c.raw.Control(func(fd uintptr) {
		var iov unix.Iovec // OPT_TSONLY: no data comes back
		for range 64 {
			msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &c.txOOB[0]}
			msg.SetControllen(len(c.txOOB))
			_, _, errno := syscall.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if errno != 0 {
				return
			}
			if ts, key, ok := transmitStamp(c.txOOB[:msg.Controllen]); ok && int64(key) == c.txWant&0xffffffff {
				c.sent = ts
			}
		}
	})
}

// transmitStamp returns the software time and byte key of an error-queue
// message that reports a transmit stamp.
func transmitStamp(oob []byte) (ts int64, key uint32, ok bool) {
	hdr := int(unsafe.Sizeof(unix.Cmsghdr{}))
	var haveTS, haveErr bool
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			break
		}
		data := oob[hdr:l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPING && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			// Three stamps: software, (deprecated), hardware.
			ts, haveTS = (*unix.Timespec)(unsafe.Pointer(&data[0])).Nano(), true
		case (h.Level == unix.SOL_IP && h.Type == unix.IP_RECVERR) || (h.Level == unix.SOL_IPV6 && h.Type == unix.IPV6_RECVERR):
			if len(data) >= int(unsafe.Sizeof(unix.SockExtendedErr{})) {
				e := (*unix.SockExtendedErr)(unsafe.Pointer(&data[0]))
				if e.Errno == uint32(unix.ENOMSG) && e.Origin == unix.SO_EE_ORIGIN_TIMESTAMPING && e.Info == unix.SCM_TSTAMP_SND {
					key, haveErr = e.Data, true
				}
			}
		}
		oob = oob[min(unix.CmsgSpace(l-hdr), len(oob)):]
	}
	return ts, key, haveTS && haveErr && ts > 0
}

// Read reads with recvmsg and keeps the data's kernel receive time. The
// message header and control buffer are the connection's own (one reader:
// the transport's), so a read allocates nothing.
func (c *stampConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.rc != nil {
		n, ts, err := c.rc.read(p)
		if err != nil {
			return 0, err
		}
		c.took(p[:n], ts)
		return n, nil
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
	c.took(p[:n], receiveTime(c.oob[:msg.Controllen]))
	return int(n), nil
}

// took records a read of b whose data arrived at ts.
func (c *stampConn) took(b []byte, ts int64) {
	c.clean.Store(c.frame.endsClean(b))
	c.last.Store(ts)
	c.seq.Add(1)
}

// Close takes the connection off the reactor before closing it.
func (c *stampConn) Close() error {
	if c.rc != nil {
		c.rc.close()
	}
	return c.TCPConn.Close()
}

// SetDeadline and SetReadDeadline reach the reactor's reads too.
func (c *stampConn) SetDeadline(t time.Time) error {
	if c.rc != nil {
		c.rc.setReadDeadline(t)
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *stampConn) SetReadDeadline(t time.Time) error {
	if c.rc != nil {
		c.rc.setReadDeadline(t)
	}
	return c.TCPConn.SetReadDeadline(t)
}

// receiver reads a connection on another thread (the receive reactor,
// reactor_linux.go): each read returns bytes of one kernel read, with its
// receive time.
type receiver interface {
	read(p []byte) (n int, ts int64, err error)
	// sendAt writes p after delay on the reactor's send thread; ok false:
	// it could not take the send.
	sendAt(p []byte, delay time.Duration) (n int, ok bool, err error)
	setReadDeadline(time.Time)
	close()
}

// openReceiver registers a connection's descriptor with the receive
// reactor (nil without cgo, or where it did not start).
var openReceiver func(fd int) receiver

// Reactor turns the receive reactor on for connections dialled after it
// is set (on by default where built with cgo; off, each connection's
// reader reads it with recvmsg itself).
var Reactor = true

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
