//go:build linux && cgo

package loadgen

/*
#include "reactor_linux.h"
*/
import "C"

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reactorBuffer is how much one connection's received bytes the reactor
// holds for the Go side (C memory): 100–200 SSE events. A Go reader that
// falls further behind pauses the reactor on that connection, and the
// kernel then merges what waits as before (the chunks say so).
const reactorBuffer = 32 << 10

// reactor is the Go side of the receive reactor (reactor_linux.c): a
// thread outside Go's scheduler reads the connections, so a token's
// kernel receive time no longer depends on when a goroutine got to run.
// A dispatcher goroutine wakes the readers of connections with news.
type reactor struct {
	mu    sync.Mutex
	conns map[uint32]*reactorConn
	next  uint32
}

var theReactor struct {
	once sync.Once
	r    *reactor
}

func init() { openReceiver = openReactorConn }

func getReactor() *reactor {
	theReactor.once.Do(func() {
		var p [2]int
		if unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil {
			return
		}
		if C.lem_reactor_start(C.int(p[1])) != 0 {
			unix.Close(p[0])
			unix.Close(p[1])
			return
		}
		r := &reactor{conns: map[uint32]*reactorConn{}}
		go r.dispatch(os.NewFile(uintptr(p[0]), "lem-reactor"))
		theReactor.r = r
	})
	return theReactor.r
}

// dispatch wakes the reader of every connection the reactor read from.
func (r *reactor) dispatch(f *os.File) {
	buf := make([]byte, 256)
	news := make([]C.uint64_t, 1024)
	for {
		if _, err := f.Read(buf); err != nil {
			return
		}
		for {
			n := int(C.lem_reactor_take(&news[0], C.int(len(news))))
			if n == 0 {
				break
			}
			r.mu.Lock()
			for _, v := range news[:n] {
				c := r.conns[uint32(v)]
				if c == nil {
					continue
				}
				ch := c.ready
				if uint64(v)>>32 == C.LEM_NEWS_SENT {
					ch = c.sent
				}
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			r.mu.Unlock()
		}
	}
}

// reactorConn reads one connection's bytes from the reactor, each read
// ending where one kernel read ended, with that read's receive time.
type reactorConn struct {
	r         *reactor
	id        uint32
	c         *C.struct_lem_conn
	ready     chan struct{} // news from the reactor: data read
	sent      chan struct{} // a timed send was made
	done      chan struct{} // closed
	dlChanged chan struct{}
	deadline  atomic.Int64 // read deadline, ns since the epoch; 0: none
	mu        sync.RWMutex // closing waits for a read inside the reactor
	closed    bool
}

func openReactorConn(fd int) receiver {
	r := getReactor()
	if r == nil {
		return nil
	}
	rc := &reactorConn{r: r, ready: make(chan struct{}, 1), sent: make(chan struct{}, 1), done: make(chan struct{}),
		dlChanged: make(chan struct{}, 1)}
	r.mu.Lock()
	r.next++
	rc.id = r.next
	r.conns[rc.id] = rc
	r.mu.Unlock()
	var e C.int
	rc.c = C.lem_conn_open(C.int(fd), C.uint32_t(rc.id), reactorBuffer, &e)
	if rc.c == nil {
		r.mu.Lock()
		delete(r.conns, rc.id)
		r.mu.Unlock()
		return nil
	}
	return rc
}

func (rc *reactorConn) read(p []byte) (int, int64, error) {
	for {
		rc.mu.RLock()
		if rc.closed {
			rc.mu.RUnlock()
			return 0, 0, net.ErrClosed
		}
		var ts C.int64_t
		n := C.lem_conn_read(rc.c, (*C.char)(unsafe.Pointer(&p[0])), C.size_t(len(p)), &ts)
		rc.mu.RUnlock()
		switch {
		case n > 0:
			return int(n), int64(ts), nil
		case n == C.LEM_EOF:
			return 0, 0, io.EOF
		case n < 0:
			return 0, 0, syscall.Errno(-n)
		}
		if err := rc.wait(); err != nil {
			return 0, 0, err
		}
	}
}

// wait blocks until the reactor has news for this connection, the read
// deadline passes, or the connection closes.
func (rc *reactorConn) wait() error {
	for {
		var timeout <-chan time.Time
		var t *time.Timer
		if dl := rc.deadline.Load(); dl != 0 {
			d := time.Until(time.Unix(0, dl))
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		var err error
		select {
		case <-rc.ready:
		case <-rc.done:
			err = net.ErrClosed
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-rc.dlChanged:
			if t != nil {
				t.Stop()
			}
			continue
		}
		if t != nil {
			t.Stop()
		}
		return err
	}
}

func (rc *reactorConn) setReadDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	rc.deadline.Store(ns)
	select {
	case rc.dlChanged <- struct{}{}:
	default:
	}
}

// sendAt has the reactor's send thread write p after delay (the thread
// sleeps to within 50 µs of the deadline and spins the rest) and waits
// for it. It returns how much was written (the caller writes the rest:
// the socket's buffer was full) and whether the thread took the send.
func (rc *reactorConn) sendAt(p []byte, delay time.Duration) (int, bool, error) {
	rc.mu.RLock()
	if rc.closed {
		rc.mu.RUnlock()
		return 0, true, net.ErrClosed
	}
	e := C.lem_send_at(rc.c, (*C.char)(unsafe.Pointer(&p[0])), C.size_t(len(p)), C.int64_t(delay))
	rc.mu.RUnlock()
	if e != 0 {
		return 0, false, nil
	}
	select {
	case <-rc.sent:
	case <-rc.done:
		return 0, true, net.ErrClosed
	}
	rc.mu.RLock()
	defer rc.mu.RUnlock()
	if rc.closed {
		return 0, true, net.ErrClosed
	}
	var errno C.int
	n := int(C.lem_conn_send_result(rc.c, &errno))
	if errno != 0 {
		return n, true, syscall.Errno(errno)
	}
	return n, true, nil
}

// close takes the connection off the reactor; the caller closes its
// descriptor afterwards (never before: the number could be reused).
func (rc *reactorConn) close() {
	rc.mu.Lock()
	if !rc.closed {
		rc.closed = true
		C.lem_conn_close(rc.c)
		close(rc.done)
	}
	rc.mu.Unlock()
	rc.r.mu.Lock()
	delete(rc.r.conns, rc.id)
	rc.r.mu.Unlock()
}
