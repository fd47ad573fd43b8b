package testenv

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// OIDC runs zitadel/oidc's example OpenID Provider (a complete provider:
// discovery, JWKS, authorization code flow with PKCE, signed ID tokens,
// its own login page) on a loopback port, with lem registered as a web
// client (id lem, secret lem-secret) redirecting to callback, and returns
// its issuer URL. Its users: test-user@127.0.0.1 and test-user2, password
// verysecure.
func OIDC(t testing.TB, callback string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := fmt.Sprintf("http://%s/", ln.Addr())
	storage.RegisterClients(storage.WebClient("lem", "lem-secret", callback))
	st := storage.NewStorage(storage.NewUserStore(issuer))
	router := exampleop.SetupServer(issuer, st, slog.New(slog.NewTextHandler(io.Discard, nil)), false, op.WithAllowInsecure())
	srv := &http.Server{Handler: router}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return issuer
}
