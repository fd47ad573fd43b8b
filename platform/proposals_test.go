package platform

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// An unknown board is proposed to the moderators with the runs that used
// it, once per board and limit; known boards, the simulator and unnamed
// devices are not; a moderator accepts or dismisses it with a reason.
func TestUnknownBoardsProposed(t *testing.T) {
	data, _, _, _ := h200Bundle(t)
	p := newTestPlatform(t)
	ctx := context.Background()
	alice, mod := p.user(t, "alice", RoleUser), p.user(t, "mod", RoleModerator)
	// A verified upload of an H200 run: a standard profile, nothing proposed.
	if code, out := p.upload(t, alice, data); code != 201 {
		t.Fatalf("upload: %d %v", code, out)
	}
	var props []ProfileProposal
	if code := p.call(t, "GET", "/api/moderation/profiles", mod, nil, &props); code != 200 || len(props) != 0 {
		t.Fatalf("after an H200 run: %d %+v", code, props)
	}
	info := map[string]deviceInfo{"GPU-1": {Name: "NVIDIA B200", LimitW: 1000}, "GPU-2": {Name: "NVIDIA H200", LimitW: 700, Known: true},
		"GPU-3": {Name: "GPU-3"}, "sim-0": {Name: "simulated GPU 0"}}
	p.srv.proposeUnknown(ctx, "run-1", info)
	p.srv.proposeUnknown(ctx, "run-2", info)
	p.srv.proposeUnknown(ctx, "run-2", info)
	if code := p.call(t, "GET", "/api/moderation/profiles", mod, nil, &props); code != 200 || len(props) != 1 ||
		props[0].Name != "NVIDIA B200" || props[0].LimitW != 1000 || strings.Join(props[0].Runs, ",") != "run-1,run-2" || props[0].State != ProposalOpen {
		t.Fatalf("proposals: %d %+v", code, props)
	}
	stream, _ := p.srv.cfg.State.js.Stream(ctx, "LEM_V1")
	info2, err := stream.Info(ctx, jetstream.WithSubjectFilter(SubjectPlatform+".profile.>"))
	if err != nil || info2.State.Subjects[SubjectPlatform+".profile.proposed"] != 1 {
		t.Errorf("profile events: %v %v (want one proposal event)", err, info2.State.Subjects)
	}
	var e map[string]any
	key := props[0].Key
	for _, c := range []struct {
		tok  string
		body map[string]string
		code int
	}{
		{alice, map[string]string{"decision": "accepted", "reason": "x"}, http.StatusForbidden},
		{mod, map[string]string{"decision": "accepted"}, http.StatusBadRequest},
		{mod, map[string]string{"decision": "maybe", "reason": "x"}, http.StatusBadRequest},
	} {
		if code := p.call(t, "POST", "/api/moderation/profiles/"+key, c.tok, c.body, &e); code != c.code {
			t.Errorf("%v: %d %v, want %d", c.body, code, e, c.code)
		}
	}
	if code := p.call(t, "POST", "/api/moderation/profiles/nope", mod, map[string]string{"decision": "dismissed", "reason": "x"}, &e); code != 404 {
		t.Errorf("unknown proposal: %d", code)
	}
	// A run on the unknown board, labelled so on the board.
	unknown := Entry{RunID: "run-1", Model: "m", Hardware: deviceInfo{Name: "NVIDIA B200"}.label(), Verification: "verified", Submitter: "alice"}
	if err := p.srv.cfg.State.Publish(ctx, Published{Entry: unknown}); err != nil {
		t.Fatal(err)
	}
	p.srv.board.Put(unknown)
	// Accepting needs the datasheet's figures, checked.
	reason := "B200 SXM datasheet: 1000 W, 180 GB"
	fig := func(id string, mem, limit float64) map[string]any {
		return map[string]any{"decision": "accepted", "reason": reason, "profile": map[string]any{"id": id, "name": "NVIDIA B200 SXM 180 GB", "memory_gb": mem, "limit_w": limit}}
	}
	for _, c := range []struct {
		body map[string]any
		says string
	}{
		{map[string]any{"decision": "accepted", "reason": reason}, "datasheet figures"},
		{fig("B200!", 180, 1000), "profile id"},
		{fig("h200-sxm", 180, 1000), "taken"},
		{fig("b200-sxm", 0, 1000), "memory_gb"},
		{fig("b200-sxm", 180, 900), "below the 1000 W enforced"},
	} {
		e = nil
		if code := p.call(t, "POST", "/api/moderation/profiles/"+key, mod, c.body, &e); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(e["error"]), c.says) {
			t.Errorf("%v: %d %v, want 400 …%s…", c.body["profile"], code, e, c.says)
		}
	}
	if _, ok := MatchProfile("NVIDIA B200", 1000); ok {
		t.Fatal("a board matched before its profile was accepted")
	}
	var got ProfileProposal
	if code := p.call(t, "POST", "/api/moderation/profiles/"+key, mod, fig("b200-sxm", 180, 1000), &got); code != 200 ||
		got.State != ProposalAccepted || got.Moderator != "mod" || !strings.Contains(got.Reason, "datasheet") || got.Profile == nil || got.Profile.ID != "b200-sxm" {
		t.Fatalf("accept: %d %+v", code, got)
	}
	// From now on the board is that profile: matched, offered to jobs, and
	// the runs on it relabelled (kept across a restart).
	if pr, ok := MatchProfile("NVIDIA B200", 1000); !ok || pr.ID != "b200-sxm" || pr.MemoryGB != 180 {
		t.Errorf("match after acceptance: %+v %v", pr, ok)
	}
	if _, ok := MatchProfile("NVIDIA B200 Ultra", 1000); ok {
		t.Error("an accepted profile matched another board's name")
	}
	if e, ok := p.srv.board.Get("run-1"); !ok || e.Hardware != "NVIDIA B200 SXM 180 GB" {
		t.Errorf("the run on the board after acceptance: %q", e.Hardware)
	}
	if code := p.call(t, "POST", "/api/moderation/profiles/"+key, mod, map[string]string{"decision": "dismissed", "reason": "changed my mind"}, &e); code != http.StatusConflict {
		t.Errorf("a second decision: %d", code)
	}
	accepted.Lock()
	accepted.ps = nil
	accepted.Unlock()
	if _, err := New(ctx, p.cfg); err != nil {
		t.Fatal(err)
	}
	if pr, ok := MatchProfile("NVIDIA B200", 1000); !ok || pr.ID != "b200-sxm" {
		t.Errorf("after a restart: %+v %v", pr, ok)
	}
	runs, _ := p.srv.cfg.State.Runs(ctx)
	for _, r := range runs {
		if r.Entry.RunID == "run-1" && r.Entry.Hardware != "NVIDIA B200 SXM 180 GB" {
			t.Errorf("the kept run's label: %q", r.Entry.Hardware)
		}
	}
}
