//go:build !linux

package loadgen

import "net"

// kernelStamped returns c: kernel receive stamps are read on Linux only;
// elsewhere tokens carry user-space stamps (and say so).
func kernelStamped(c net.Conn) net.Conn { return c }

// holdKernelStamps does nothing where kernel stamps are not read.
func holdKernelStamps() {}
