package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
)

// logFlags adds --verbose and --quiet and returns a constructor of the
// logger they select.
func logFlags(fs *flag.FlagSet) func() zerolog.Logger {
	verbose := fs.Bool("verbose", false, "log debug detail")
	quiet := fs.Bool("quiet", false, "log only errors")
	return func() zerolog.Logger {
		lvl := zerolog.InfoLevel
		switch {
		case *quiet:
			lvl = zerolog.ErrorLevel
		case *verbose:
			lvl = zerolog.DebugLevel
		}
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(lvl).With().Timestamp().Logger()
	}
}

// clickhouseFlags adds the ClickHouse connection flags. The password is
// read from LEM_CLICKHOUSE_PASSWORD or a file, never from the command line.
func clickhouseFlags(fs *flag.FlagSet) func() (ingest.ClickHouseConfig, error) {
	addr := fs.String("clickhouse", "", "ClickHouse native-protocol address host:port (empty: none)")
	db := fs.String("database", "lem", "ClickHouse database")
	user := fs.String("clickhouse-user", "default", "ClickHouse user")
	pwFile := fs.String("clickhouse-password-file", "", "file holding the ClickHouse password (or set LEM_CLICKHOUSE_PASSWORD)")
	return func() (ingest.ClickHouseConfig, error) {
		c := ingest.ClickHouseConfig{Addr: *addr, Database: *db, User: *user, PasswordFile: *pwFile}
		c.Password = os.Getenv("LEM_CLICKHOUSE_PASSWORD")
		if c.Password == "" && *pwFile != "" {
			b, err := os.ReadFile(*pwFile)
			if err != nil {
				return c, fmt.Errorf("reading password file: %w", err)
			}
			c.Password = strings.TrimRight(string(b), "\r\n")
		}
		return c, nil
	}
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
