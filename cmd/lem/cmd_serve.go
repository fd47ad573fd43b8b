package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/store"
)

func init() {
	register(&command{
		name: "serve",
		summary: "Run the embedded backbone as a daemon: a JetStream server listening for agents and runners, " +
			"with ingest in-process into -parquet or -clickhouse.",
		setup: newServeCmd,
	})
}

// backbone is an embedded JetStream server with in-process ingest.
type backbone struct {
	nc   *nats.Conn
	url  string
	stop func() // drains ingest, then shuts everything down
}

// startBackbone starts JetStream (its store under natsDir) with ingest
// into the store sc names.
// token, if set, is required of the clients that connect to listen.
func startBackbone(listen, token, natsDir string, sc store.Config, log zerolog.Logger) (*backbone, error) {
	return startBackboneWith(bus.EmbeddedConfig{StoreDir: natsDir, Listen: listen, Token: token}, bus.StreamConfig{}, sc, log)
}

// startBackboneWith is startBackbone for a server configured in full (a
// cluster node) with its streams' configuration.
func startBackboneWith(ec bus.EmbeddedConfig, strc bus.StreamConfig, sc store.Config, log zerolog.Logger) (*backbone, error) {
	emb, err := bus.StartEmbedded(ec)
	if err != nil {
		return nil, err
	}
	nc, err := emb.Connect("lem-backbone")
	if err != nil {
		emb.Shutdown()
		return nil, err
	}
	fail := func(err error) (*backbone, error) {
		nc.Close()
		emb.Shutdown()
		return nil, err
	}
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		return fail(err)
	}
	js := pub.JetStream()
	if err := bus.EnsureStreams(context.Background(), js, strc); err != nil {
		return fail(err)
	}
	sink, err := openStore(context.Background(), sc, true, log)
	if err != nil {
		return fail(err)
	}
	ictx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.New(js, sink, ingest.Config{}, nil, log).Run(ictx) }()
	return &backbone{nc: nc, url: emb.ClientURL(), stop: func() {
		fctx, c := context.WithTimeout(context.Background(), time.Minute)
		defer c()
		_ = waitIngested(fctx, js)
		cancel()
		<-done
		sink.Close()
		nc.Close()
		emb.Shutdown()
	}}, nil
}

// serveCmd holds the flags of `lem serve`.
type serveCmd struct {
	fs          *flag.FlagSet
	listen      *string
	listenToken *string
	withIngest  *bool
	serverName  *string
	clusterName *string
	clusterAt   *string
	routes      *string
	replicas    *int
	stc         func() store.Config
	logger      func() zerolog.Logger
}

// newServeCmd registers the flags of `lem serve` on fs.
func newServeCmd(fs *flag.FlagSet) func([]string) error {
	opt := &serveCmd{
		fs:          fs,
		listen:      fs.String("listen", "127.0.0.1:4222", "NATS client address to listen on"),
		listenToken: fs.String("listen-token-file", "", "file holding the token every client (agents, runners) must present (or set LEM_NATS_LISTEN_TOKEN); they give it with -nats-token-file"),
		withIngest:  fs.Bool("ingest", true, "run ingest in-process (false: only the JetStream server, for a separate lem ingest)"),
		clusterAt:   fs.String("cluster-listen", "", "make this server a node of a JetStream cluster: host:port for routes from the other nodes"),
		clusterName: fs.String("cluster-name", "lem", "the cluster's name, the same on every node"),
		serverName:  fs.String("server-name", "", "this node's name, unique in the cluster (default: the cluster listen address)"),
		routes:      fs.String("routes", "", "comma-separated route URLs of the other nodes, e.g. nats://10.0.0.2:6222,nats://10.0.0.3:6222"),
		replicas:    fs.Int("stream-replicas", 1, "replicas of the streams when this server's ingest creates them (3 on a 3-node cluster)"),
		stc:         storeFlags(fs, "lem-store", "Parquet store directory (unless -clickhouse); the JetStream store is <dir>.nats"),
		logger:      logFlags(fs),
	}
	return opt.run
}

// embeddedConfig is the server the flags describe.
func (opt *serveCmd) embeddedConfig(natsDir, token string) bus.EmbeddedConfig {
	ec := bus.EmbeddedConfig{StoreDir: natsDir, Listen: *opt.listen, Token: token}
	if *opt.clusterAt != "" {
		ec.Cluster = bus.ClusterConfig{Name: *opt.clusterName, ServerName: *opt.serverName, Listen: *opt.clusterAt, Routes: splitList(*opt.routes)}
		if ec.Cluster.ServerName == "" {
			ec.Cluster.ServerName = "lem-" + strings.NewReplacer(":", "-", ".", "-").Replace(*opt.clusterAt)
		}
	}
	return ec
}

func (opt *serveCmd) run(_ []string) error {
	log := opt.logger()
	natsDir := opt.fs.Lookup("parquet").Value.String() + ".nats"
	if !*opt.withIngest {
		token, err := readSecret("LEM_NATS_LISTEN_TOKEN", *opt.listenToken, "NATS listen token")
		if err != nil {
			return err
		}
		emb, err := bus.StartEmbedded(opt.embeddedConfig(natsDir, token))
		if err != nil {
			return err
		}
		fmt.Printf("serving NATS on %s (no ingest)\n", emb.ClientURL())
		ctx, cancel := signalContext()
		defer cancel()
		<-ctx.Done()
		emb.Shutdown()
		return nil
	}
	token, err := readSecret("LEM_NATS_LISTEN_TOKEN", *opt.listenToken, "NATS listen token")
	if err != nil {
		return err
	}
	bb, err := startBackboneWith(opt.embeddedConfig(natsDir, token), bus.StreamConfig{Replicas: *opt.replicas}, opt.stc(), log)
	if err != nil {
		return err
	}
	fmt.Printf("serving NATS on %s\n", bb.url)
	ctx, cancel := signalContext()
	defer cancel()
	<-ctx.Done()
	bb.stop()
	return nil

}
