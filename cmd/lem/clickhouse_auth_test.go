package main

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"

	chstore "github.com/llm-energy-measure/lem/store/clickhouse"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/chserver"
	"github.com/llm-energy-measure/lem/internal/testenv"
)

// TestClickHouseCredentials: the password of a user that needs one is
// taken from LEM_CLICKHOUSE_PASSWORD or -clickhouse-password-file (never a
// flag), works against a real server requiring it, and appears neither in
// errors nor in logs.
func TestClickHouseCredentials(t *testing.T) {
	addr := testenv.ClickHouse(t)
	connect := func(env string, args ...string) (string, error) {
		t.Setenv("LEM_CLICKHOUSE_PASSWORD", env)
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		build := storeFlags(fs, "", "")
		if err := fs.Parse(append([]string{"-clickhouse", addr, "-clickhouse-user", chserver.TestUser}, args...)); err != nil {
			t.Fatal(err)
		}
		c := build()
		var logs bytes.Buffer
		log := zerolog.New(&logs)
		st, err := openStore(context.Background(), c, false, log)
		if err != nil {
			log.Error().Err(err).Interface("config", c).Msg("connect failed")
			return logs.String(), err
		}
		defer st.Close()
		conn := st.Tables.(*chstore.Store).Conn()
		var who string
		// 18.16 has no currentUser(): this query finds itself.
		if err := conn.QueryRow(context.Background(), "SELECT any(user) FROM system.processes WHERE query LIKE '%lem-whoami%'").Scan(&who); err != nil {
			return "", err
		}
		log.Info().Interface("config", c).Str("user", who).Msg("connected")
		if who != chserver.TestUser {
			t.Errorf("connected as %q", who)
		}
		return logs.String(), nil
	}
	if logs, err := connect(chserver.TestUserPassword); err != nil {
		t.Fatalf("password from the environment: %v", err)
	} else if strings.Contains(logs, chserver.TestUserPassword) {
		t.Errorf("password in the logs: %s", logs)
	}
	file := writeFile(t, "pw", chserver.TestUserPassword+"\n")
	if _, err := connect("", "-clickhouse-password-file", file); err != nil {
		t.Fatalf("password from a file: %v", err)
	}
	wrong := "not-" + chserver.TestUserPassword
	logs, err := connect(wrong)
	if err == nil {
		t.Fatal("a wrong password connected")
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(logs, wrong) {
		t.Errorf("the wrong password leaked: %v / %s", err, logs)
	}
	if _, err := connect(""); err == nil {
		t.Fatal("no password connected as a user that needs one")
	}
	// There is no flag that takes the password itself.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	storeFlags(fs, "", "x")
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(f.Name, "password") && !strings.HasSuffix(f.Name, "-file") {
			t.Errorf("flag -%s would put a password on the command line", f.Name)
		}
	})
}
