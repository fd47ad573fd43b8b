package bus

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// An embedded server with a token refuses TCP clients without it and
// takes those with it; its in-process clients present it themselves.
func TestEmbeddedToken(t *testing.T) {
	e, err := StartEmbedded(EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if nc, err := nats.Connect(e.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without the token was let in")
	}
	if nc, err := nats.Connect(e.ClientURL(), nats.Token("wrong"), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client with a wrong token was let in")
	}
	nc, err := nats.Connect(e.ClientURL(), nats.Token("s3cret"))
	if err != nil {
		t.Fatalf("the token's client: %v", err)
	}
	nc.Close()
	in, err := e.Connect("in-process")
	if err != nil {
		t.Fatalf("in-process: %v", err)
	}
	in.Close()
}
