//go:build !linux

package pacedserver

import "net"

// listenArrivals returns ln: kernel receive times are read on Linux only
// (Entry.Arrived stays 0).
func listenArrivals(ln net.Listener) net.Listener { return ln }
