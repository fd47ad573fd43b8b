package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func startNATS(t *testing.T, o *server.Options) string {
	t.Helper()
	o.Host, o.Port, o.NoLog, o.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(s.Shutdown)
	scheme := "nats"
	if o.TLSConfig != nil {
		scheme = "tls"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.Addr().(*net.TCPAddr).Port)
}

func connectWith(t *testing.T, url string, args ...string) error {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	build := natsFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	opts, err := build()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(3*time.Second), nats.MaxReconnects(0))...)
	if err == nil {
		nc.Close()
	}
	return err
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The agent, ingest and run reach an authenticated, TLS-only NATS with
// the credentials given as files or environment variables, and fail
// without them.
func TestNATSAuthenticationAndTLS(t *testing.T) {
	t.Run("user and password", func(t *testing.T) {
		url := startNATS(t, &server.Options{Username: "lem", Password: "s3cret"})
		if err := connectWith(t, url, "-nats-user", "lem", "-nats-password-file", writeFile(t, "pw", "s3cret\n")); err != nil {
			t.Fatal(err)
		}
		t.Setenv("LEM_NATS_PASSWORD", "wrong")
		if err := connectWith(t, url, "-nats-user", "lem"); err == nil {
			t.Fatal("wrong password accepted")
		}
	})
	t.Run("token", func(t *testing.T) {
		url := startNATS(t, &server.Options{Authorization: "tok-123"})
		t.Setenv("LEM_NATS_TOKEN", "tok-123")
		if err := connectWith(t, url); err != nil {
			t.Fatal(err)
		}
		t.Setenv("LEM_NATS_TOKEN", "")
		if err := connectWith(t, url); err == nil {
			t.Fatal("no token accepted")
		}
	})
	t.Run("nkey", func(t *testing.T) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		url := startNATS(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
		if err := connectWith(t, url, "-nats-nkey", writeFile(t, "user.nk", string(seed))); err != nil {
			t.Fatal(err)
		}
		other, _ := nkeys.CreateUser()
		oseed, _ := other.Seed()
		if err := connectWith(t, url, "-nats-nkey", writeFile(t, "other.nk", string(oseed))); err == nil {
			t.Fatal("unknown nkey accepted")
		}
	})
	t.Run("tls", func(t *testing.T) {
		caPEM, certPEM, keyPEM := selfSigned(t)
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		url := startNATS(t, &server.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, TLSTimeout: 2})
		if err := connectWith(t, url, "-nats-ca", writeFile(t, "ca.pem", string(caPEM))); err != nil {
			t.Fatal(err)
		}
		if err := connectWith(t, url); err == nil {
			t.Fatal("server certificate accepted without the CA")
		}
	})
	if err := connectWith(t, "nats://127.0.0.1:1", "-nats-cert", "c.pem"); err == nil {
		t.Fatal("-nats-cert without -nats-key accepted")
	}
}

// selfSigned returns a CA and a server certificate for 127.0.0.1 it signed.
func selfSigned(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lem test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	caCert, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// TestNATSFlagsEverywhere: every command that connects to NATS takes the
// same authentication and TLS flags (lem schedule once had none, so an
// experiment whose NATS needs credentials ran under run but not schedule).
func TestNATSFlagsEverywhere(t *testing.T) {
	want := map[string]bool{}
	ref := flag.NewFlagSet("ref", flag.ContinueOnError)
	natsFlags(ref)
	ref.VisitAll(func(f *flag.Flag) { want[f.Name] = true })
	for _, name := range []string{"agent", "ingest", "loadtest", "run", "schedule"} {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		commands[name].setup(fs)
		for n := range want {
			if fs.Lookup(n) == nil {
				t.Errorf("lem %s has no -%s", name, n)
			}
		}
	}
}
