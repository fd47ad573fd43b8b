package testenv

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Hosts are network namespaces on one bridge, each a host of its own with
// an address on a /24 that the test's own namespace also reaches (at .254),
// for tests of what crosses a network: Cut takes a host off the network
// without stopping anything on it (a partition), Heal puts it back.
type Hosts struct {
	t      testing.TB
	bridge string
	ns     []string
	veth   []string
	// IP holds each host's address.
	IP []string
}

// NewHosts makes n hosts, removed when the test ends. It needs root and
// iproute2 (`ip netns`); without them it skips (fails with LEM_E2E=1).
func NewHosts(t testing.TB, n int) *Hosts {
	t.Helper()
	if os.Geteuid() != 0 {
		Miss(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		Miss(t, "no ip command: install Debian's iproute2")
	}
	// Names of at most 15 bytes, unique per test; a /24 drawn from 10.200–
	// 10.249 so that tests running at once do not collide.
	tag := fmt.Sprintf("%05x", rand.IntN(1<<20))
	net := fmt.Sprintf("10.%d.%d", 200+rand.IntN(50), rand.IntN(250))
	h := &Hosts{t: t, bridge: "lemb" + tag}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			Miss(t, "ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		for i, ns := range h.ns {
			exec.Command("ip", "link", "del", h.veth[i]).Run()
			exec.Command("ip", "netns", "del", ns).Run()
		}
		exec.Command("ip", "link", "del", h.bridge).Run()
	})
	run("link", "add", h.bridge, "type", "bridge")
	run("addr", "add", net+".254/24", "dev", h.bridge)
	run("link", "set", h.bridge, "up")
	for i := 1; i <= n; i++ {
		ns, veth, ip := fmt.Sprintf("lem%sh%d", tag, i), fmt.Sprintf("lv%s%d", tag, i), fmt.Sprintf("%s.%d", net, i)
		run("netns", "add", ns)
		h.ns, h.veth, h.IP = append(h.ns, ns), append(h.veth, veth), append(h.IP, ip)
		run("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run("link", "set", veth, "master", h.bridge, "up")
		run("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		run("-n", ns, "link", "set", "eth0", "up")
		run("-n", ns, "link", "set", "lo", "up")
	}
	return h
}

// Command returns the command line that runs name with args on host i
// (0-based): `ip netns exec` replaces itself with the program, so the
// process started is the program's own.
func (h *Hosts) Command(i int, name string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", h.ns[i], name}, args...)
}

// Cut takes host i off the network: nothing crosses its link until Heal.
// The processes on it keep running, and their connections stay open.
func (h *Hosts) Cut(i int) { h.link(i, "down") }

// Heal puts host i back on the network.
func (h *Hosts) Heal(i int) { h.link(i, "up") }

func (h *Hosts) link(i int, state string) {
	h.t.Helper()
	if out, err := exec.Command("ip", "link", "set", h.veth[i], state).CombinedOutput(); err != nil {
		h.t.Fatalf("ip link set %s %s: %v: %s", h.veth[i], state, err, out)
	}
}
