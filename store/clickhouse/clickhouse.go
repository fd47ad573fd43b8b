// Package clickhouse is the ClickHouse store: configuration, connection,
// migrations, block inserts for ingest, table reads for analytics and the
// exporters, and the analysis results written back. No other package of
// lem imports the ClickHouse driver.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/fence"
	"github.com/llm-energy-measure/lem/schemas"
)

// PasswordEnv overrides Config.PasswordFile.
const PasswordEnv = "LEM_CLICKHOUSE_PASSWORD"

// Config says where the ClickHouse store is. Credentials come from the
// environment or a file, never from the command line.
type Config struct {
	Addr     string `yaml:"addr"`     // host:port of the native protocol (9000)
	Database string `yaml:"database"` // default "lem"
	User     string `yaml:"user"`     // default "default"
	// PasswordFile holds the password; LEM_CLICKHOUSE_PASSWORD overrides.
	PasswordFile string `yaml:"password_file"`
	// Cluster names the servers' cluster (remote_servers) when the
	// database has the clustered schema (lem migrate -cluster): writes
	// then go whole to one shard's local table with a quorum of its
	// replicas (ADR 0018).
	Cluster  string `yaml:"cluster"`
	Password string `yaml:"-" json:"-"` // never logged or shown
}

// WithDefaults fills the database ("lem") and user ("default").
func (c Config) WithDefaults() Config {
	if c.Database == "" {
		c.Database = "lem"
	}
	if c.User == "" {
		c.User = "default"
	}
	return c
}

// Validate checks the configuration once, before anything connects: an
// address, and a database name that is a plain identifier (it is spliced
// into SQL).
func (c Config) Validate() error {
	c = c.WithDefaults()
	if c.Addr == "" {
		return errors.New("clickhouse: no address (host:port of the native protocol, 9000)")
	}
	if err := schemas.CheckIdentifier(c.Database); err != nil {
		return fmt.Errorf("clickhouse database: %w", err)
	}
	if c.Cluster != "" {
		if err := schemas.CheckIdentifier(c.Cluster); err != nil {
			return fmt.Errorf("clickhouse cluster: %w", err)
		}
	}
	return nil
}

// LoadPassword sets Password from LEM_CLICKHOUSE_PASSWORD, else from
// PasswordFile (trailing newlines trimmed).
func (c *Config) LoadPassword() error {
	if v := os.Getenv(PasswordEnv); v != "" {
		c.Password = v
		return nil
	}
	if c.PasswordFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return fmt.Errorf("reading the ClickHouse password file: %w", err)
	}
	c.Password = strings.TrimRight(string(b), "\r\n")
	return nil
}

// DSN-free open: the native protocol only (HTTP breaks on 18.16).
func (c Config) options() *ch.Options {
	return &ch.Options{
		Addr: []string{c.Addr},
		Auth: ch.Auth{Database: "default", Username: c.User, Password: c.Password},
		// 18.16 rejects settings it does not know: send none by default.
		DialTimeout:      5 * time.Second,
		ReadTimeout:      5 * time.Minute,
		MaxOpenConns:     8,
		MaxIdleConns:     8,
		ConnMaxLifetime:  time.Hour,
		Compression:      &ch.Compression{Method: ch.CompressionLZ4},
		BlockBufferSize:  4,
		ConnOpenStrategy: ch.ConnOpenInOrder,
		DialContext:      dial,
	}
}

// dial connects to addr; a connection dialled for a fenced write (ADR
// 0019) checks the write's lease before every chunk it sends.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if limit, ok := fence.From(ctx); ok {
		return fence.Conn(c, limit), nil
	}
	return c, nil
}

// Connect opens a connection to the server (no database needed). It does
// not create or migrate the database; see Migrate and Open.
func Connect(ctx context.Context, c Config) (driver.Conn, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	conn, err := ch.Open(c.options())
	if err != nil {
		return nil, fmt.Errorf("opening clickhouse %s: %w", c.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connecting to clickhouse %s: %w", c.Addr, err)
	}
	return conn, nil
}

// ServerVersion returns the server's version.
func ServerVersion(ctx context.Context, conn driver.Conn) (schemas.ServerVersion, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return schemas.ServerVersion{}, fmt.Errorf("reading server version: %w", err)
	}
	return schemas.ParseServerVersion(v)
}

// MigrationResult reports what Migrate did.
type MigrationResult struct {
	Server  schemas.ServerVersion
	Applied []schemas.Migration
	// Waiting lists migrations that need a newer server; they apply
	// automatically once the server is upgraded.
	Waiting []schemas.Migration
}

// Migrate creates database db and applies every embedded migration the
// server supports and has not applied yet, in order.
func Migrate(ctx context.Context, conn driver.Conn, db string, log zerolog.Logger) (MigrationResult, error) {
	return MigrateCluster(ctx, conn, db, "", log)
}

// MigrateCluster is Migrate for a cluster (cluster non-empty): the
// database and every table are created ON CLUSTER, tables as replicated
// <name>_local with a Distributed <name> over them
// (schemas.Migration.RenderCluster). The bookkeeping table stays on the
// node migrated through: run it against the same node each time.
func MigrateCluster(ctx context.Context, conn driver.Conn, db, cluster string, log zerolog.Logger) (MigrationResult, error) {
	var res MigrationResult
	if err := schemas.CheckIdentifier(db); err != nil {
		return res, err
	}
	onCluster := ""
	if cluster != "" {
		if err := schemas.CheckIdentifier(cluster); err != nil {
			return res, err
		}
		onCluster = " ON CLUSTER " + cluster
	}
	sv, err := ServerVersion(ctx, conn)
	if err != nil {
		return res, err
	}
	res.Server = sv
	if cluster != "" {
		if err := waitZooKeeper(ctx, conn); err != nil {
			return res, err
		}
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db+onCluster); err != nil {
		return res, fmt.Errorf("creating database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+db+".schema_migrations "+
		"(id UInt32, name String, applied_ns Int64) ENGINE = MergeTree() ORDER BY id"); err != nil {
		return res, fmt.Errorf("creating schema_migrations: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT id FROM "+db+".schema_migrations")
	if err != nil {
		return res, fmt.Errorf("reading schema_migrations: %w", err)
	}
	for rows.Next() {
		var id uint32
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return res, err
		}
		applied[id] = true
	}
	rows.Close()
	ms, err := schemas.Migrations()
	if err != nil {
		return res, err
	}
	for _, m := range ms {
		if applied[uint32(m.ID)] {
			continue
		}
		if !sv.AtLeast(m.MinServer) {
			res.Waiting = append(res.Waiting, m)
			continue
		}
		stmts, err := m.Render(db)
		if cluster != "" {
			stmts, err = m.RenderCluster(db, cluster)
		}
		if err != nil {
			return res, err
		}
		for _, s := range stmts {
			if err := conn.Exec(ctx, s); err != nil {
				return res, fmt.Errorf("migration %04d_%s: %w", m.ID, m.Name, err)
			}
		}
		// Exec of INSERT ... VALUES hangs on 18.16; a batch works everywhere.
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (id, name, applied_ns)")
		if err == nil {
			if err = b.Append(uint32(m.ID), m.Name, time.Now().UnixNano()); err == nil {
				err = b.Send()
			}
		}
		if err != nil {
			return res, fmt.Errorf("recording migration %d: %w", m.ID, err)
		}
		log.Info().Int("id", m.ID).Str("name", m.Name).Msg("migration applied")
		res.Applied = append(res.Applied, m)
	}
	return res, nil
}

// waitZooKeeper waits (up to a minute) until the server has a ZooKeeper
// session. ON CLUSTER DDL before that crashed 18.16 (a segmentation fault
// in zkutil::ZooKeeper::createImpl after the DDL worker's first connection
// timed out, seen in TestClickHouseCluster2x2 under load).
func waitZooKeeper(ctx context.Context, conn driver.Conn) error {
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		var n uint64
		if err = conn.QueryRow(ctx, "SELECT count() FROM system.zookeeper WHERE path = '/'").Scan(&n); err == nil {
			return nil
		}
		if strings.Contains(err.Error(), "no zookeeper configuration") || strings.Contains(err.Error(), "There is no zookeeper") {
			return fmt.Errorf("clickhouse: the clustered schema needs ZooKeeper, and the server has none configured: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("clickhouse: no ZooKeeper session within a minute (the clustered schema needs it): %w", err)
}

// sendBlockRows is the size of the data blocks an insert is sent in.
const sendBlockRows = 65_536

// Store is database DB of a ClickHouse server: ingest writes blocks into
// it, analytics and the exporters read tables from it, analysis results
// are written back into it. Safe for concurrent use.
type Store struct {
	conn driver.Conn
	// fenced writes (a lease's limit in the context, ADR 0019) each open
	// a client of these options, so that their connection is dialled for
	// the insert and carries its lease, and close it after; nil for a
	// store made by New.
	fenced *ch.Options
	db     string
	addr   string
	// shards of the cluster (Config.Cluster), in shard order; nil on one
	// server.
	shards []shard
	// insert statements by table, built once; workers share the store.
	inserts sync.Map
}

// Open connects and, when migrate is set, creates the database and applies
// the migrations the server supports.
func Open(ctx context.Context, c Config, migrate bool, log zerolog.Logger) (*Store, error) {
	c = c.WithDefaults()
	conn, err := Connect(ctx, c)
	if err != nil {
		return nil, err
	}
	if migrate {
		if _, err := MigrateCluster(ctx, conn, c.Database, c.Cluster, log); err != nil {
			conn.Close()
			return nil, err
		}
	}
	st := &Store{conn: conn, fenced: c.options(), db: c.Database, addr: c.Addr}
	if c.Cluster != "" {
		if st.shards, err = openShards(ctx, conn, c); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return st, nil
}

// mix spreads block sequences over the shards (splitmix64's finaliser):
// blocks of a steady size would otherwise start on sequences of one
// residue and land on one shard.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// shard is one shard of the cluster: a connection that tries its
// replicas in order, and how many replicas an insert must reach.
type shard struct {
	conn     driver.Conn
	fenced   *ch.Options
	replicas int
}

// openShards reads the cluster's shards from system.clusters and connects
// to each.
func openShards(ctx context.Context, conn driver.Conn, c Config) ([]shard, error) {
	rows, err := conn.Query(ctx, "SELECT shard_num, groupArray(concat(host_address, ':', toString(port))) FROM system.clusters WHERE cluster = ? GROUP BY shard_num ORDER BY shard_num", c.Cluster)
	if err != nil {
		return nil, fmt.Errorf("reading cluster %s: %w", c.Cluster, err)
	}
	defer rows.Close()
	var out []shard
	for rows.Next() {
		var num uint32
		var addrs []string
		if err := rows.Scan(&num, &addrs); err != nil {
			return nil, err
		}
		o := c.options()
		o.Addr = addrs
		sc, err := ch.Open(o)
		if err != nil {
			return nil, fmt.Errorf("opening shard %d of %s: %w", num, c.Cluster, err)
		}
		out = append(out, shard{conn: sc, fenced: o, replicas: len(addrs)})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("clickhouse: no cluster %s in system.clusters of %s", c.Cluster, c.Addr)
	}
	return out, nil
}

// New returns a store of database db over conn, which it then owns.
func New(conn driver.Conn, db string) (*Store, error) {
	if err := schemas.CheckIdentifier(db); err != nil {
		return nil, err
	}
	return &Store{conn: conn, db: db}, nil
}

// Conn returns the underlying connection.
func (s *Store) Conn() driver.Conn { return s.conn }

// Database returns the database's name.
func (s *Store) Database() string { return s.db }

func (s *Store) Name() string { return "clickhouse" }

// Describe says where the store is, for people.
func (s *Store) Describe() string { return "ClickHouse " + s.addr + " database " + s.db }

func (s *Store) Close() error {
	for _, sh := range s.shards {
		sh.conn.Close()
	}
	return s.conn.Close()
}

func (s *Store) Watermark(ctx context.Context, table string, epoch int64) (uint64, error) {
	if err := schemas.CheckIdentifier(table); err != nil {
		return 0, err
	}
	var wm uint64
	if err := s.conn.QueryRow(ctx, "SELECT max(stream_seq) FROM "+s.db+"."+table+" WHERE stream_epoch = ?", epoch).Scan(&wm); err != nil {
		return 0, fmt.Errorf("reading watermark of %s: %w", table, err)
	}
	return wm, nil
}

func (s *Store) Write(ctx context.Context, t *schemas.Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	if t.Rows() == 0 {
		return nil
	}
	_, fenced := fence.From(ctx)
	if fenced {
		if err := fence.Check(ctx); err != nil {
			return err
		}
		if s.fenced == nil {
			return fmt.Errorf("inserting into %s: a store made over a connection (New) cannot bound a write by a lease; open it with Open", t.Name)
		}
	}
	conn, target, opts := s.conn, t.Name, s.fenced
	if s.shards != nil {
		// The clustered schema (ADR 0018): a block of ingest's, whole, to
		// one shard's local table — one part, atomic — chosen by a hash of
		// its lowest stream sequence, so that a retry goes to the same shard
		// (where a block that did land is deduplicated), acknowledged
		// once every replica has it, so that the watermark read from any
		// replica sees it. Anything else through the Distributed table,
		// synchronously.
		if seqs, ok := t.Column("stream_seq").(*schemas.Col[uint64]); ok && seqs.Len() > 0 && t.Name != schemas.TableDevice {
			sh := s.shards[mix(slices.Min(seqs.V))%uint64(len(s.shards))]
			conn, target, opts = sh.conn, t.Name+"_local", sh.fenced
			if sh.replicas > 1 {
				ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{"insert_quorum": sh.replicas}))
			}
		} else {
			ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{"insert_distributed_sync": 1}))
		}
	}
	if fenced {
		// Not from the pool: pooled connections were dialled for other
		// writes. (A client of its own, closed after: clickhouse-go's pool
		// can deadlock in Close when its lifetime ticker is short.)
		c, err := ch.Open(opts)
		if err != nil {
			return fmt.Errorf("inserting into %s: %w", t.Name, err)
		}
		defer c.Close()
		conn = c
	}
	var q string
	if v, ok := s.inserts.Load(target); ok {
		q = v.(string)
	} else {
		if err := schemas.CheckIdentifier(target); err != nil {
			return err
		}
		// 18.16 returns a batch with no columns unless they are named.
		q = "INSERT INTO " + s.db + "." + target + " (" + strings.Join(t.ColumnNames(), ", ") + ")"
		s.inserts.Store(target, q)
	}
	batch, err := conn.PrepareBatch(ctx, q)
	if err != nil {
		return fmt.Errorf("preparing insert into %s: %w", t.Name, err)
	}
	// The rows go as data blocks of at most sendBlockRows inside the one
	// INSERT: the client reuses its column buffers from block to block
	// (a single block would grow fresh ones of the whole table's size on
	// every insert), and the server squashes the blocks back into one
	// before writing (below min_insert_block_size_rows, 1,048,576, and
	// _bytes, 256 MiB; Config.BatchRows and BatchBytes stay below them),
	// so the insert is still one part, all or nothing (ADR 0003).
	n := t.Rows()
	for a := 0; a < n; a += sendBlockRows {
		b := min(a+sendBlockRows, n)
		for i, c := range t.Columns {
			if err := batch.Column(i).Append(schemas.NullableData(c.Slice(a, b))); err != nil {
				_ = batch.Abort()
				return fmt.Errorf("appending column %s.%s: %w", t.Name, c.Name(), err)
			}
		}
		if b < n {
			if err := batch.Flush(); err != nil {
				_ = batch.Abort()
				return fmt.Errorf("inserting %d rows into %s: %w", n, t.Name, err)
			}
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", t.Rows(), t.Name, err)
	}
	return nil
}
