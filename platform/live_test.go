package platform

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// readLive connects to a job's live progress and reads n updates (or
// until the socket closes), returning their sequences.
func readLive(t *testing.T, p *testPlatform, token, jobID string, after uint64, n int) ([]Progress, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(p.http.URL, "http://", "ws://", 1) + "/api/jobs/" + jobID + "/live"
	if after > 0 {
		url += "?after=" + strconvU(after)
	}
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatal(err)
	}
	var out []Progress
	for len(out) < n {
		_, b, err := c.Read(ctx)
		if err != nil {
			break
		}
		var pr Progress
		if err := json.Unmarshal(b, &pr); err != nil {
			t.Fatal(err)
		}
		out = append(out, pr)
	}
	return out, c
}

func strconvU(v uint64) string { b, _ := json.Marshal(v); return string(b) }

// Live progress: what a worker publishes reaches every viewer once, in
// order, through one consumer per job; a viewer that reconnects with the
// last sequence it saw gets the rest with no gap and no duplicate; the
// socket closes after the job's last update; only the submitter (and
// moderators) may watch.
func TestLiveProgress(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}))
	alice, bob := p.user(t, "alice", RoleUser), p.user(t, "bob", RoleUser)
	var job Job
	p.call(t, "POST", "/api/jobs", alice, map[string]string{"profile": "sim", "experiment": simJob}, &job)
	js := p.srv.cfg.Jobs.js
	pub := func(done int, end bool) {
		b, _ := json.Marshal(Progress{JobID: job.ID, Phase: "cycle", Done: done, Total: 40, PowerW: 300 + float64(done), EndOfJob: end})
		if _, err := js.Publish(context.Background(), ProgressSubject(job.ID), b); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		pub(i, false)
	}
	first, c1 := readLive(t, p, alice, job.ID, 0, 3)
	second, c2 := readLive(t, p, alice, job.ID, 0, 3)
	if len(first) != 3 || len(second) != 3 || first[2].Done != 3 || first[0].Seq == 0 || first[0].Seq >= first[2].Seq {
		t.Fatalf("viewers got %+v and %+v", first, second)
	}
	p.srv.live.mu.Lock()
	feeds, viewers := len(p.srv.live.feeds), p.srv.live.feeds[job.ID].viewers
	p.srv.live.mu.Unlock()
	if feeds != 1 || viewers != 2 {
		t.Errorf("%d feeds with %d viewers, want one feed for both", feeds, viewers)
	}
	c1.Close(websocket.StatusNormalClosure, "")
	c2.Close(websocket.StatusNormalClosure, "")
	// Published while nobody watched; the viewer comes back.
	pub(4, false)
	pub(5, false)
	pub(6, true)
	rest, c3 := readLive(t, p, alice, job.ID, first[2].Seq, 10)
	defer c3.CloseNow()
	if len(rest) != 3 || rest[0].Done != 4 || rest[2].Done != 6 || !rest[2].EndOfJob {
		t.Errorf("after reconnecting: %+v", rest)
	}
	for i := 1; i < len(rest); i++ {
		if rest[i].Seq <= rest[i-1].Seq || rest[0].Seq <= first[2].Seq {
			t.Errorf("sequences not increasing: %+v", rest)
		}
	}
	if code := p.call(t, "GET", "/api/jobs/"+job.ID+"/live", bob, nil, nil); code != http.StatusNotFound {
		t.Errorf("bob watching alice's job: %d", code)
	}
}
