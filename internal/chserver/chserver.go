// Package chserver starts and stops a private clickhouse-server process on
// free loopback ports with its own data directory. Tests use it for
// throwaway servers and `lem demo` for a local store when the binary is
// installed.
package chserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// ErrNotInstalled is returned when no clickhouse-server binary is found.
var ErrNotInstalled = errors.New("clickhouse-server is not installed (Debian: apt-get install -y clickhouse-server)")

// Server is a running private server.
type Server struct {
	Dir      string // data, config and logs
	TCPPort  int    // native protocol
	HTTPPort int
	// InterserverPort serves parts to the other replicas of a shard.
	InterserverPort int
	cmd             *exec.Cmd
	done            chan struct{}
	waitErr         error
}

// Addr returns the native-protocol address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TCPPort)) }

// Binary returns the path of clickhouse-server, or ErrNotInstalled.
func Binary() (string, error) {
	for _, name := range []string{"clickhouse-server", "clickhouse"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server", "/usr/bin/clickhouse"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}

// Options for Start.
type Options struct {
	Dir     string        // data, config and logs (created if needed)
	TCPPort int           // 0: a free port
	Timeout time.Duration // to accept connections (0: 60 s)
	// Detach lets the server outlive this process (lem demo leaves it
	// running so the rows stay queryable); otherwise it dies with it.
	Detach bool
	// HTTPPort and InterserverPort (0: free ports); fixed ones let a
	// replica restart where its peers know it.
	HTTPPort, InterserverPort int
	// Cluster replaces the default one-shard cluster lem_test and its
	// macros: XML elements for remote_servers, macros and zookeeper.
	Cluster string
}

// Start launches a server and returns once it accepts native-protocol
// connections.
func Start(ctx context.Context, o Options) (*Server, error) {
	dir, tcpPort, timeout := o.Dir, o.TCPPort, o.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if tcpPort == 0 {
		if tcpPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	httpPort, interPort := o.HTTPPort, o.InterserverPort
	if httpPort == 0 {
		if httpPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if interPort == 0 {
		if interPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	cluster := o.Cluster
	if cluster == "" {
		cluster = fmt.Sprintf(`<remote_servers><lem_test><shard><replica><host>127.0.0.1</host><port>%d</port></replica></shard></lem_test></remote_servers>
  <macros><shard>1</shard><replica>r1</replica></macros>`, tcpPort)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating clickhouse dir: %w", err)
		}
	}
	cfg := filepath.Join(dir, "config.xml")
	if err := os.WriteFile(cfg, []byte(configXML(dir, tcpPort, httpPort, interPort, cluster)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(usersXML), 0o644); err != nil {
		return nil, err
	}
	args := []string{"--config-file=" + cfg}
	if filepath.Base(bin) == "clickhouse" {
		args = append([]string{"server"}, args...)
	}
	cmd := exec.Command(bin, args...)
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = dir
	// Own process group, and die with the parent where the OS allows it,
	// so a killed test leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !o.Detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting clickhouse-server: %w", err)
	}
	s := &Server{Dir: dir, TCPPort: tcpPort, HTTPPort: httpPort, InterserverPort: interPort, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		out.Close()
		close(s.done)
	}()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			_ = os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
			return s, nil
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "err.log"))
			return nil, fmt.Errorf("clickhouse-server exited: %v: %s", s.waitErr, tail(log, 2000))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("clickhouse-server did not accept connections on %s within %v", s.Addr(), timeout)
		}
	}
}

// Stop terminates the server and waits for it to exit.
func (s *Server) Stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	return nil
}

// Exited reports whether the server process has ended.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Pid returns the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func configXML(dir string, tcpPort, httpPort, interPort int, cluster string) string {
	return fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/err.log</errorlog><size>10M</size><count>2</count></logger>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[1]s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>%[4]d</interserver_http_port>
  %[5]s
</yandex>
`, dir, tcpPort, httpPort, interPort, cluster)
}

// TestUser and TestUserPassword are a user that needs a password, on
// every server this package starts (loopback only), for the tests of
// credential handling.
const (
	TestUser         = "lem_secured"
	TestUserPassword = "s3cr3t-Only-In-Env"
)

const usersXML = `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
    <lem_secured><password>` + TestUserPassword + `</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></lem_secured></users>
  <quotas><default></default></quotas>
</yandex>
`
