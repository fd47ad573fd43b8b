package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	chstore "github.com/llm-energy-measure/lem/store/clickhouse"

	"github.com/llm-energy-measure/lem/schemas"
)

func init() {
	register(&command{
		name: "migrate",
		summary: "Create the ClickHouse database and apply every schema migration the server supports " +
			"(-cluster: the clustered schema, replicated tables with Distributed tables over them).",
		setup: func(fs *flag.FlagSet) func([]string) error {
			cluster := fs.String("cluster", "", "cluster name from the servers' remote_servers: create every table ON CLUSTER as "+
				"Replicated*MergeTree <table>_local plus Distributed <table>")
			printOnly := fs.Bool("print", false, "print the statements instead of running them (with -cluster: the clustered schema)")
			stc := storeFlags(fs, "", "")
			logger := logFlags(fs)
			return func([]string) error {
				cfg := stc().ClickHouse.WithDefaults()
				if *printOnly {
					return printMigrations(cfg.Database, *cluster)
				}
				if cfg.Addr == "" {
					return errors.New("-clickhouse is required")
				}
				log := logger()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				if err := cfg.LoadPassword(); err != nil {
					return err
				}
				conn, err := chstore.Connect(ctx, cfg)
				if err != nil {
					return err
				}
				defer conn.Close()
				res, err := chstore.MigrateCluster(ctx, conn, cfg.Database, *cluster, log)
				if err != nil {
					return err
				}
				fmt.Printf("server %s: %d migration(s) applied", res.Server, len(res.Applied))
				for _, m := range res.Waiting {
					fmt.Printf("; %04d_%s waits for server %s", m.ID, m.Name, m.MinServer)
				}
				fmt.Println()
				return nil
			}
		},
	})
}

// printMigrations writes every migration's statements, rendered for db
// (and cluster), each with its minimum server.
func printMigrations(db, cluster string) error {
	ms, err := schemas.Migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		stmts, err := m.Render(db)
		if cluster != "" {
			stmts, err = m.RenderCluster(db, cluster)
		}
		if err != nil {
			return err
		}
		fmt.Printf("-- %04d_%s (ClickHouse %s or newer)\n", m.ID, m.Name, m.MinServer)
		for _, s := range stmts {
			fmt.Printf("%s;\n\n", s)
		}
	}
	return nil
}
