package platform

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The public dataset: built on its schedule once the board has a public
// run (a held submission is not one), as a Hugging Face dataset whose card
// states the verification policy, and served whole.
func TestPublicDataset(t *testing.T) {
	data, _, _, run := h200Bundle(t)
	p := newTestPlatformTB(t, func(c *Config, _ *nats.Conn, _ jetstream.JetStream) { c.Moderate = true })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice, mod := p.user(t, "alice", RoleUser), p.user(t, "mod", RoleModerator)
	if code, out := p.upload(t, alice, data); code != 201 {
		t.Fatalf("upload: %d %v", code, out)
	}
	go p.srv.RunDatasetSchedule(ctx, 100*time.Millisecond)
	var e map[string]any
	time.Sleep(400 * time.Millisecond)
	if code := p.call(t, "GET", "/api/dataset", "", nil, &e); code != 404 {
		t.Fatalf("a dataset with only a held run: %d %v", code, e)
	}
	// The timeline needs the run's events stored before the export can
	// read them: wait for ingest as the browser test does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tl Timeline
		if p.call(t, "GET", "/api/runs/"+run+"/timeline?points=10", alice, nil, &tl); tl.RequestsTotal == 192 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run's events did not reach the store")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := p.call(t, "POST", "/api/moderation/"+run, mod, map[string]string{"decision": "approved"}, &e); code != 200 {
		t.Fatalf("approve: %d %v", code, e)
	}
	var info DatasetInfo
	deadline = time.Now().Add(60 * time.Second)
	for p.call(t, "GET", "/api/dataset", "", nil, &info) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the dataset was not built after the approval")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if info.Runs != 1 || info.Bytes == 0 {
		t.Fatalf("dataset %+v", info)
	}
	resp, err := http.Get(p.http.URL + "/api/dataset.zip")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var card string
	parquet := 0
	for _, f := range zr.File {
		if f.Name == "README.md" {
			rc, _ := f.Open()
			c, _ := io.ReadAll(rc)
			card = string(c)
		}
		if strings.HasSuffix(f.Name, ".parquet") {
			parquet++
		}
	}
	if !strings.Contains(card, "## Provenance and verification") || !strings.Contains(card, "approved") || !strings.Contains(card, run) || parquet == 0 {
		t.Errorf("card (%d parquet files):\n%s", parquet, card)
	}
}
