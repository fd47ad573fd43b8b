package platform

import (
	"context"
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
	var got ProfileProposal
	if code := p.call(t, "POST", "/api/moderation/profiles/"+key, mod, map[string]string{"decision": "accepted", "reason": "B200 SXM datasheet: 1000 W, 180 GB"}, &got); code != 200 ||
		got.State != ProposalAccepted || got.Moderator != "mod" || !strings.Contains(got.Reason, "datasheet") {
		t.Errorf("accept: %d %+v", code, got)
	}
}
