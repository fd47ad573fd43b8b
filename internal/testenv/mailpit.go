package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// MailpitVersion is the SMTP server the notification tests send to: a real
// server speaking SMTP with STARTTLS, whose API says what arrived.
const MailpitVersion = "v1.33.1"

var (
	mailpitOnce sync.Once
	mailpitBin  string
	mailpitErr  error
)

// Mail is a running mail server for one test.
type Mail struct {
	SMTP   string // host:port, STARTTLS required
	API    string // base URL of its HTTP API
	CAFile string // PEM of the CA that signed its certificate
}

// Mailpit starts a mail server (built from the Go module proxy into
// .cache the first time: a minute or two) on free loopback ports, with a
// certificate of a throwaway CA, STARTTLS required and any credentials
// accepted; it stops when the test ends. Gating follows LEM_E2E.
func Mailpit(t testing.TB) Mail {
	t.Helper()
	if os.Getenv("LEM_E2E") == "0" {
		t.Skip("LEM_E2E=0: tests needing a mail server are off")
	}
	mailpitOnce.Do(func() {
		mailpitBin, mailpitErr = buildFromProxy("github.com/axllent/mailpit", MailpitVersion, ".", "mailpit", "")
	})
	if mailpitErr != nil {
		if os.Getenv("LEM_E2E") != "1" {
			t.Skipf("skipping: mailpit unavailable: %v (LEM_E2E=1 makes this a failure)", mailpitErr)
		}
		t.Fatalf("building mailpit %s: %v", MailpitVersion, mailpitErr)
	}
	dir := t.TempDir()
	ca, cert, key, err := throwawayTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	smtpPort, httpPort := freeTCPPort(t), freeTCPPort(t)
	m := Mail{SMTP: fmt.Sprintf("127.0.0.1:%d", smtpPort), API: fmt.Sprintf("http://127.0.0.1:%d", httpPort), CAFile: ca}
	cmd := exec.Command(mailpitBin, "--smtp", m.SMTP, "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort), "--database", filepath.Join(dir, "mail.db"),
		"--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-starttls", "--smtp-auth-accept-any", "--disable-version-check")
	out, _ := os.Create(filepath.Join(dir, "mailpit.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); out.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(m.API + "/api/v1/messages"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return m
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "mailpit.log"))
			t.Fatalf("mailpit did not start: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Message is a mail as the server's API lists it.
type Message struct {
	Subject string
	From    struct{ Address string }
	To      []struct{ Address string }
	Snippet string
}

// Messages lists what the server received.
func (m Mail) Messages(t testing.TB) []Message {
	t.Helper()
	resp, err := http.Get(m.API + "/api/v1/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Messages []Message }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	return list.Messages
}

func freeTCPPort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// throwawayTLS writes a CA and a server certificate for 127.0.0.1 signed
// by it; it returns the files' paths.
func throwawayTLS(dir string) (caFile, certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lem test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string][]byte{caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyFile: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})} {
		if err = os.WriteFile(f, b, 0o600); err != nil {
			return
		}
	}
	return
}
