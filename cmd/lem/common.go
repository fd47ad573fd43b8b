package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
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
		secret := func(env, file, what string) (string, error) {
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
		if *user != "" {
			pw, err := secret("LEM_NATS_PASSWORD", *pwFile, "NATS password")
			if err != nil {
				return nil, err
			}
			opts = append(opts, nats.UserInfo(*user, pw))
		}
		tok, err := secret("LEM_NATS_TOKEN", *tokenFile, "NATS token")
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
