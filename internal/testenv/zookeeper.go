package testenv

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// zooKeeperJar is Debian's zookeeper package (make zookeeper).
const zooKeeperJar = "/usr/share/java/zookeeper.jar"

// ZooKeeper is a throwaway standalone ZooKeeper server (Debian's package)
// on a free loopback port, for replicated ClickHouse tables; Stop and
// Start restart it on the same port and data.
type ZooKeeper struct {
	t    testing.TB
	Addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartZooKeeper starts one, stopped when the test ends. Without Java or
// the package it skips (fails with LEM_E2E=1).
func StartZooKeeper(t testing.TB) *ZooKeeper {
	t.Helper()
	if _, err := os.Stat(zooKeeperJar); err != nil {
		Miss(t, "no ZooKeeper at %s: install Debian's zookeeper (make zookeeper)", zooKeeperJar)
	}
	if _, err := exec.LookPath("java"); err != nil {
		Miss(t, "no java for ZooKeeper: install Debian's default-jre-headless (make zookeeper)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	z := &ZooKeeper{t: t, Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: t.TempDir()}
	cfg := fmt.Sprintf("tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\nmaxSessionTimeout=20000\n",
		filepath.Join(z.dir, "data"), port)
	if err := os.WriteFile(filepath.Join(z.dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	z.Start()
	return z
}

// Start starts the server and waits until it answers.
func (z *ZooKeeper) Start() {
	z.t.Helper()
	z.cmd = exec.Command("java", "-Xmx256m", "-cp", zooKeeperJar, "org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(z.dir, "zoo.cfg"))
	z.cmd.Dir = z.dir
	z.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	log, err := os.OpenFile(filepath.Join(z.dir, "zookeeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		z.t.Fatal(err)
	}
	z.cmd.Stdout, z.cmd.Stderr = log, log
	if err := z.cmd.Start(); err != nil {
		z.t.Fatalf("starting ZooKeeper: %v", err)
	}
	z.done = make(chan struct{})
	go func() { z.cmd.Wait(); log.Close(); close(z.done) }()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if z.ruok() {
			return
		}
		select {
		case <-z.done:
			b, _ := os.ReadFile(filepath.Join(z.dir, "zookeeper.log"))
			z.t.Fatalf("ZooKeeper exited: %s", b)
		default:
		}
	}
	z.t.Fatalf("ZooKeeper did not answer on %s within a minute", z.Addr)
}

// Stop stops the server (SIGKILL: as a crash) and waits for it.
func (z *ZooKeeper) Stop() {
	if z.cmd == nil || z.cmd.Process == nil {
		return
	}
	select {
	case <-z.done:
		return
	default:
	}
	z.cmd.Process.Kill()
	<-z.done
}

func (z *ZooKeeper) ruok() bool {
	c, err := net.DialTimeout("tcp", z.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ruok")); err != nil {
		return false
	}
	b, _ := io.ReadAll(c)
	return strings.TrimSpace(string(b)) == "imok"
}
