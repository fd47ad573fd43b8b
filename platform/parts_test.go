package platform

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

func TestResumableUpload(t *testing.T) {
	data, _, hash, run := h200Bundle(t)
	p := newTestPlatform(t)
	p.srv.cfg.PartsDir = t.TempDir()
	alice, bob := p.token(t, "alice", ScopeUpload), p.token(t, "bob", ScopeUpload)
	url := p.http.URL + "/api/uploads/parts/" + hash
	put := func(tok string, off int, b []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s?offset=%d", url, off), strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	state := func(tok string) partState {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		var st partState
		getWith(t, &http.Client{Transport: authTransport{tok}}, url, &st, 200)
		return st
	}
	half := len(data) / 2
	if code, body := put(alice, 0, data[:half]); code != 200 || !strings.Contains(body, fmt.Sprint(half)) {
		t.Fatalf("first part: %d %s", code, body)
	}
	// The connection "broke": the client asks where the platform is.
	if st := state(alice); st.Received != int64(half) {
		t.Fatalf("alice's upload has %d bytes, want %d", st.Received, half)
	}
	if code, body := put(alice, 10, data[10:20]); code != 409 || !strings.Contains(body, fmt.Sprintf(`"received":%d`, half)) {
		t.Fatalf("a part at the wrong offset: %d %s", code, body)
	}
	// Bob's parts are his own: he cannot append to alice's.
	if st := state(bob); st.Received != 0 {
		t.Fatalf("bob sees %d bytes of alice's upload", st.Received)
	}
	if code, _ := put(bob, half, data[half:]); code != 409 {
		t.Fatalf("bob appending at alice's offset: %d", code)
	}
	if code, body := put(alice, half, data[half:]); code != 200 {
		t.Fatalf("second part: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/complete", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("complete: %v %d %s", err, resp.StatusCode, b)
	}
	resp.Body.Close()
	var u Upload
	getJSON(t, p.http.URL+"/api/uploads/"+run, &u)
	if u.State != "verified" || u.User != "alice" || u.Hash != hash {
		t.Fatalf("upload state: %+v", u)
	}
	if st := state(alice); st.Received != 0 {
		t.Fatalf("the parts were kept after completing: %d bytes", st.Received)
	}
	// Parts that do not hash to the name are refused and dropped.
	bad := strings.Repeat("0", 64)
	badURL := p.http.URL + "/api/uploads/parts/" + bad
	req, _ = http.NewRequest(http.MethodPut, badURL+"?offset=0", strings.NewReader("not a bundle"))
	req.Header.Set("Authorization", "Bearer "+bob)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodPost, badURL+"/complete", nil)
	req.Header.Set("Authorization", "Bearer "+bob)
	resp, _ = http.DefaultClient.Do(req)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "hash to") {
		t.Fatalf("parts of another hash: %d %s", resp.StatusCode, body)
	}
}

// authTransport adds a bearer token to every request.
type authTransport struct{ tok string }

func (a authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// lem upload's client resumes through a connection that breaks in the
// middle of every third part.
func TestSendResumesThroughBrokenConnections(t *testing.T) {
	data, _, hash, run := h200Bundle(t)
	p := newTestPlatform(t)
	p.srv.cfg.PartsDir = t.TempDir()
	var puts atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && puts.Add(1)%3 == 0 {
			io.CopyN(io.Discard, r.Body, 1000)
			panic(http.ErrAbortHandler) // the connection drops mid-part
		}
		p.srv.Handler().ServeHTTP(w, r)
	}))
	defer flaky.Close()
	oldT, oldS := PartThreshold, PartSize
	PartThreshold, PartSize = 1024, 16<<10
	retryWait = time.Millisecond
	defer func() { PartThreshold, PartSize, retryWait = oldT, oldS, time.Second }()
	path := filepath.Join(t.TempDir(), "run.lemb")
	os.WriteFile(path, data, 0o600)
	msg, err := Send(context.Background(), flaky.URL, p.token(t, "alice", ScopeUpload), path, hash)
	if err != nil || !strings.Contains(msg, "verified and published") {
		t.Fatalf("send: %v\n%s", err, msg)
	}
	parts := int32((len(data) + 16<<10 - 1) / (16 << 10))
	if n := puts.Load(); n <= parts {
		t.Fatalf("%d PUTs for %d parts: no part was cut and resent", n, parts)
	}
	if _, ok := p.srv.Board().Get(run); !ok {
		t.Fatal("the run is not on the board")
	}
}

// A bundle signed with the host's NKey records its signer; a signature
// that does not verify over the content hash is refused.
func TestSignedUpload(t *testing.T) {
	data, _, hash, run := h200Bundle(t)
	p := newTestPlatform(t)
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	path := filepath.Join(t.TempDir(), "run.lemb")
	os.WriteFile(path, data, 0o600)
	tok := p.token(t, "alice", ScopeUpload)
	forged, _ := Sign(seed, strings.Repeat("a", 64)) // signs another hash
	if _, err := Send(context.Background(), p.http.URL, tok, path, hash, forged); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a signature of another hash: %v", err)
	}
	sig, err := Sign(seed, hash)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Send(context.Background(), p.http.URL, tok, path, hash, sig)
	if err != nil || !strings.Contains(msg, "signed by NKey "+pub) {
		t.Fatalf("signed upload: %v\n%s", err, msg)
	}
	var u Upload
	getJSON(t, p.http.URL+"/api/uploads/"+run, &u)
	if u.Signer != pub {
		t.Fatalf("signer %q, want %q", u.Signer, pub)
	}
}
