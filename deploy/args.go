package deploy

// Ingest is `lem ingest`'s command line in every deployment: the compose
// file, the Kubernetes manifests and the cluster tests build theirs from
// it (TestIngestArgsAgree), so that what the tests prove under faults is
// what is deployed. Every deployment shares the consumers (-shared, ADR
// 0017): more replicas of ingest are safe.
type Ingest struct {
	NATS           string // -nats
	StreamReplicas string // -stream-replicas
	ClickHouse     string // -clickhouse
	Database       string // -database
	User           string // -clickhouse-user (empty: the default)
	PasswordFile   string // -clickhouse-password-file (empty: none)
	Cluster        string // -clickhouse-cluster (empty: one server)
	Metrics        string // -metrics
	// Extra are settings only tests change (a short lease, a fast flush).
	Extra []string
}

// Args returns the command line, "ingest" first.
func (c Ingest) Args() []string {
	a := []string{"ingest", "-shared", "-nats", c.NATS, "-stream-replicas", c.StreamReplicas, "-clickhouse", c.ClickHouse, "-database", c.Database}
	if c.User != "" {
		a = append(a, "-clickhouse-user", c.User)
	}
	if c.PasswordFile != "" {
		a = append(a, "-clickhouse-password-file", c.PasswordFile)
	}
	if c.Cluster != "" {
		a = append(a, "-clickhouse-cluster", c.Cluster)
	}
	a = append(a, "-metrics", c.Metrics)
	return append(a, c.Extra...)
}

// ComposeIngest and KubernetesIngest are the deployments' ingest (their
// files spell out these arguments; the test holds them equal).
var (
	ComposeIngest = Ingest{NATS: "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222", StreamReplicas: "3",
		ClickHouse: "clickhouse:9000", Database: "lem", User: "lem", PasswordFile: "/run/secrets/clickhouse_password", Metrics: "0.0.0.0:9464"}
	KubernetesIngest = Ingest{NATS: "$(NATS_URL)", StreamReplicas: "$(STREAM_REPLICAS)", ClickHouse: "$(CLICKHOUSE_ADDR)",
		Database: "$(CLICKHOUSE_DATABASE)", User: "$(CLICKHOUSE_USER)", PasswordFile: "/etc/lem/clickhouse/password", Metrics: "0.0.0.0:9464"}
)
