package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/internal/logging"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// logFlags adds -verbose, -quiet and -log-format and returns a
// constructor of the logger they select (on stderr).
func logFlags(fs *flag.FlagSet) func() zerolog.Logger {
	verbose := fs.Bool("verbose", false, "log debug detail")
	quiet := fs.Bool("quiet", false, "log only errors")
	format := logFormat(logging.FormatAuto)
	fs.Var(&format, "log-format", "auto (console on a terminal, else JSON lines), json or console")
	return func() zerolog.Logger {
		lvl := zerolog.InfoLevel
		switch {
		case *quiet:
			lvl = zerolog.ErrorLevel
		case *verbose:
			lvl = zerolog.DebugLevel
		}
		l, _ := logging.New(os.Stderr, string(format), lvl) // format checked when parsed
		return l
	}
}

// logFormat is the value of -log-format, checked when parsed.
type logFormat string

func (f *logFormat) String() string { return string(*f) }

func (f *logFormat) Set(v string) error {
	if _, err := logging.New(io.Discard, v, zerolog.InfoLevel); err != nil {
		return err
	}
	*f = logFormat(v)
	return nil
}

// storeFlags adds the store flags: -clickhouse with its database, user
// and password file, and, when pqUsage is set, -parquet (default
// pqDefault, dropped when -clickhouse is given and -parquet is not). The
// ClickHouse password comes from LEM_CLICKHOUSE_PASSWORD or the file,
// never from the command line; store.Open reads it.
func storeFlags(fs *flag.FlagSet, pqDefault, pqUsage string) func() store.Config {
	addr := fs.String("clickhouse", "", "ClickHouse native-protocol address host:port (empty: none)")
	db := fs.String("database", "lem", "ClickHouse database")
	user := fs.String("clickhouse-user", "default", "ClickHouse user")
	pwFile := fs.String("clickhouse-password-file", "", "file holding the ClickHouse password (or set "+chstore.PasswordEnv+")")
	cluster := fs.String("clickhouse-cluster", "", "the servers' cluster when the database has the clustered schema (lem migrate -cluster): ingest writes each block to one shard's local table with a quorum of its replicas (ADR 0018)")
	var pq *string
	if pqUsage != "" {
		pq = fs.String("parquet", pqDefault, pqUsage)
	}
	return func() store.Config {
		c := store.Config{ClickHouse: chstore.Config{Addr: *addr, Database: *db, User: *user, PasswordFile: *pwFile, Cluster: *cluster}}
		if pq != nil {
			c.Parquet = *pq
			if *addr != "" && !flagSet(fs, "parquet") {
				c.Parquet = ""
			}
		}
		return c
	}
}

// setFlags adds -set (repeatable) and -backend: overrides of the
// experiment file, checked like it and stored with the runs.
func setFlags(fs *flag.FlagSet) func() []string {
	var sets []string
	fs.Func("set", "override a setting of the experiment file: path=value in YAML, e.g. -set workload.arrival.rate=4 (repeatable)", func(v string) error {
		sets = append(sets, v)
		return nil
	})
	kind := fs.String("backend", "", "override backend.kind (as -set backend.kind=KIND)")
	return func() []string {
		if *kind != "" {
			return append(append([]string(nil), sets...), "backend.kind="+*kind)
		}
		return sets
	}
}

// footprintFlags adds the grid intensity and price used to show energy as
// CO₂e and cost.
func footprintFlags(fs *flag.FlagSet) func() analytics.Footprint {
	grid := fs.Float64("grid-gco2-per-kwh", analytics.DefaultFootprint.GridGPerKWh,
		"carbon intensity of the electricity, gCO2e/kWh (default: "+analytics.DefaultFootprint.GridSource+")")
	price := fs.Float64("price-per-kwh", 0, "electricity price per kWh, to show a cost (0: none)")
	currency := fs.String("currency", "USD", "currency of -price-per-kwh")
	return func() analytics.Footprint {
		f := analytics.Footprint{GridGPerKWh: *grid, GridSource: analytics.DefaultFootprint.GridSource, PricePerKWh: *price, Currency: *currency}
		if flagSet(fs, "grid-gco2-per-kwh") {
			f.GridSource = "given"
		}
		return f
	}
}

// flagSet reports whether flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// openStore opens the store c names; migrate creates and migrates the
// ClickHouse database first.
func openStore(ctx context.Context, c store.Config, migrate bool, log zerolog.Logger) (*store.Store, error) {
	return store.Open(ctx, c, store.Options{Migrate: migrate, Log: log, ToolVersion: version})
}

// writeResults stores r's result tables beside its events (replacing an
// earlier analysis of the run).
func writeResults(ctx context.Context, st *store.Store, r *analytics.RunResult) error {
	if err := st.WriteResults(ctx, r.RunID, analytics.ResultTables(r, time.Now().UnixNano())); err != nil {
		return fmt.Errorf("writing the results of %s: %w", r.RunID, err)
	}
	return nil
}

// openRuns opens the store c names and returns it with ids, or with every
// run it holds when ids is empty.
func openRuns(ctx context.Context, c store.Config, migrate bool, log zerolog.Logger, ids []string) (*store.Store, []string, error) {
	st, err := openStore(ctx, c, migrate, log)
	if err != nil {
		return nil, nil, err
	}
	if len(ids) == 0 {
		if ids, err = st.RunIDs(ctx); err != nil {
			st.Close()
			return nil, nil, err
		}
	}
	return st, ids, nil
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func writeOrPrint(path string, content string, stdout io.Writer) error {
	if path == "" || path == "-" {
		_, err := io.WriteString(stdout, content)
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

// natsFlags adds NATS authentication and TLS flags. Secrets come from
// files or the environment (LEM_NATS_PASSWORD, LEM_NATS_TOKEN), never from
// the command line, and never reach the logs.
func natsFlags(fs *flag.FlagSet) func() ([]nats.Option, error) {
	user := fs.String("nats-user", "", "NATS user; the password from LEM_NATS_PASSWORD or -nats-password-file")
	pwFile := fs.String("nats-password-file", "", "file holding the NATS user's password")
	tokenFile := fs.String("nats-token-file", "", "file holding a NATS authentication token (or set LEM_NATS_TOKEN)")
	creds := fs.String("nats-creds", "", "NATS credentials file (user JWT and NKey seed)")
	nkey := fs.String("nats-nkey", "", "file holding an NKey seed (NKey authentication)")
	ca := fs.String("nats-ca", "", "CA certificate (PEM) that signed the NATS server's; makes the connection TLS")
	cert := fs.String("nats-cert", "", "client certificate (PEM) for mutual TLS (with -nats-key)")
	key := fs.String("nats-key", "", "client private key (PEM) for mutual TLS")
	return func() ([]nats.Option, error) {
		var opts []nats.Option
		if *user != "" {
			pw, err := readSecret("LEM_NATS_PASSWORD", *pwFile, "NATS password")
			if err != nil {
				return nil, err
			}
			opts = append(opts, nats.UserInfo(*user, pw))
		}
		tok, err := readSecret("LEM_NATS_TOKEN", *tokenFile, "NATS token")
		if err != nil {
			return nil, err
		}
		if tok != "" {
			opts = append(opts, nats.Token(tok))
		}
		if *creds != "" {
			opts = append(opts, nats.UserCredentials(*creds))
		}
		if *nkey != "" {
			o, err := nats.NkeyOptionFromSeed(*nkey)
			if err != nil {
				return nil, fmt.Errorf("-nats-nkey: %w", err)
			}
			opts = append(opts, o)
		}
		if *ca != "" {
			opts = append(opts, nats.RootCAs(*ca))
		}
		if (*cert == "") != (*key == "") {
			return nil, errors.New("-nats-cert and -nats-key go together")
		}
		if *cert != "" {
			opts = append(opts, nats.ClientCert(*cert, *key))
		}
		return opts, nil
	}
}

// readSecret returns a secret from the environment variable env, else
// from file (its trailing newline dropped), else "": secrets never come
// from the command line.
func readSecret(env, file, what string) (string, error) {
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading %s file: %w", what, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// profileFlag registers -cpuprofile on fs. The function returned starts
// the profile when the flag is set and returns what stops it.
func profileFlag(fs *flag.FlagSet, of string) func() (stop func(), err error) {
	path := fs.String("cpuprofile", "", "write a CPU profile of "+of+" to this file")
	return func() (func(), error) {
		if *path == "" {
			return func() {}, nil
		}
		f, err := os.Create(*path)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		return func() { pprof.StopCPUProfile(); f.Close() }, nil
	}
}

// readerHeap is the heap the Go collector aims to stay under in the
// commands that read a store through (lem analyze, lem export) unless
// GOMEMLIMIT says otherwise: they read in spans and chunks, so their live
// heap is small, but garbage between collections (GOGC=100 lets the heap
// double) would otherwise show as RSS. A soft limit: above it the
// collector works harder, it never fails an allocation.
const readerHeap = 1536 << 20

func boundHeap() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(readerHeap)
	}
}
