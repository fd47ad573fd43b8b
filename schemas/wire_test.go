package schemas

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

const ts0 = int64(1795757067937870850)

// samples returns one fully populated event of every kind.
func samples() []Event {
	dev := Device{Index: 3, UUID: "GPU-8c1f0e4a-0000-4000-8000-000000000003", Name: "NVIDIA H200", MIGParent: ""}
	org := Origin{Host: "node-17", Source: "nvml.buffer"}
	return []Event{
		&PowerBatch{Origin: org, Device: dev, Samples: []PowerSample{{ts0, 82_700}, {ts0 + 20_000_000, 663_012}, {ts0 + 40_000_000, 870_001}}},
		&EnergyBatch{Origin: Origin{Host: "node-17", Source: "nvml.counter"}, Device: dev, Readings: []EnergyReading{
			{TSBefore: ts0, TSAfter: ts0 + 2_600_000, Energy: 2_359_908_000},
			{TSBefore: ts0 + 1e9, TSAfter: ts0 + 1e9 + 3_100_000, Energy: 12_000, Reset: true}}},
		&StateBatch{Origin: org, Device: Device{Index: 0, UUID: "MIG-1", Name: "NVIDIA H100 MIG 1g.10gb", MIGParent: "GPU-x"},
			Samples: []StateSample{{TS: ts0, SMClock: 1980, MemClock: 2619, Temperature: 41, UtilGPU: 97, UtilMem: 55,
				MemUsed: 70 << 30, ThrottleReasons: 0x4, PowerLimit: 700 * Watt, PState: 0}}},
		&GapBatch{Origin: org, Device: dev, Gaps: []Gap{{From: ts0, To: ts0 + 2_500_000_000, Reason: "buffer overrun"}}},
		&ClockBatch{Origin: org, Device: dev, Samples: []ClockSample{
			{TS: ts0, Offset: 1_250_000, Low: 1_000_000, High: 1_500_000, Applied: 1_250_000, Reads: 30},
			{TS: ts0 + 10e9, Offset: -400, Low: -9_000, High: 8_200, Applied: 0, Reads: 10}}},
		&RequestBatch{RunID: "run-a", Requests: []Request{
			{ID: "r1", Cycle: 2, Scheduled: ts0, Sent: ts0 + 1000, FirstToken: ts0 + 50_000_000, LastToken: ts0 + 900_000_000,
				Done: ts0 + 900_100_000, PromptTokens: 512, OutputTokens: 128, Status: StatusOK},
			{ID: "r2", Scheduled: ts0 + 5, Sent: ts0 + 3, Status: StatusTimeout, Error: "deadline exceeded"},
			{ID: "r3", Scheduled: ts0, Sent: ts0 + 10, FirstToken: ts0 + 30_000_000, LastToken: ts0 + 90_000_000, Done: ts0 + 91_000_000,
				PromptTokens: 7, OutputTokens: 9, ServerQueue: 1_200_000, ServerPrefill: 18_500_000, ServerDecode: 60_250_000, KernelStamped: 6, SentKernel: true}}},
		&MetricBatch{RunID: "run-a", Endpoint: "http://127.0.0.1:8000/metrics", Samples: []MetricSample{
			{TS: ts0, Name: "vllm:gpu_cache_usage_perc", Labels: `model_name="llama"`, Value: 0.42},
			{TS: ts0 + 1e9, Name: "vllm:time_to_first_token_seconds_bucket", Labels: `le="+Inf",model_name="llama"`, Value: 17},
			{TS: ts0 + 1e9, Name: "llamacpp:requests_processing", Labels: "", Value: 3}}},
		&TokenBatch{RunID: "run-a", RequestIDs: []string{"r1", "r2"}, Tokens: []Token{
			{Request: 0, Index: 0, TS: ts0 + 50_000_000, Tokens: 1}, {Request: 1, Index: 0, TS: ts0 + 51_000_000, Tokens: 3},
			{Request: 0, Index: 1, TS: ts0 + 49_000_000, Tokens: 2}}},
		&RunEvent{RunID: "run-a", Experiment: "exp", Cycle: 1, Phase: RunEnd, TS: ts0, Backend: "vllm", Model: "llama",
			Host: "node-17", Devices: []string{"GPU-a", "GPU-b"}, Config: `{"batch":8}`, Inventory: `{"driver":"580"}`},
		&PlatformEvent{TS: ts0, Type: "upload.verified", Subject: "run-a", Actor: "github:583231", Payload: `{"state":"verified"}`},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, ev := range samples() {
		t.Run(ev.Kind().String(), func(t *testing.T) {
			b := ev.AppendWire(nil)
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ev) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, ev)
			}
			if err := ev.Validate(ts0-1e12, ts0+1e12); err != nil {
				t.Fatalf("valid sample rejected: %v", err)
			}
			// Decoding into a used event must replace, not append.
			again, _ := New(ev.Kind())
			_ = again.DecodeWire(b)
			if err := again.DecodeWire(b); err != nil || !reflect.DeepEqual(again, ev) {
				t.Fatalf("reuse: %v", err)
			}
		})
	}
}

// TestGolden freezes the wire format: a change to these bytes breaks
// every stored stream and must come with a new wire version.
func TestGolden(t *testing.T) {
	var sb strings.Builder
	for _, ev := range samples() {
		sb.WriteString(ev.Kind().String() + " " + hex.EncodeToString(ev.AppendWire(nil)) + "\n")
	}
	path := filepath.Join("testdata", "wire_v1.golden")
	if *update {
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if sb.String() != string(want) {
		t.Fatalf("wire encoding changed:\n got %s\nwant %s", sb.String(), want)
	}
}

func TestHostileInput(t *testing.T) {
	good := samples()[0].AppendWire(nil)
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":       {nil, ErrTruncated},
		"magic":       {append([]byte("XEM"), good[3:]...), ErrMagic},
		"version":     {append([]byte{'L', 'E', 'M', 9}, good[4:]...), ErrVersion},
		"kind":        {append([]byte{'L', 'E', 'M', 1, 99}, good[5:]...), ErrKind},
		"truncated":   {good[:len(good)-1], ErrTruncated},
		"trailing":    {append(append([]byte{}, good...), 0), ErrTrailing},
		"huge count":  {append(appendOrigin(appendHeader(nil, KindPower), &Origin{"h", "s"}), 0, 1, 'u', 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), ErrTruncated},
		"huge string": {append(appendHeader(nil, KindPower), 0xff, 0xff, 0xff, 0x7f), ErrTooLarge},
		"too large":   {append(appendHeader(nil, KindPower), make([]byte, MaxMessageSize)...), ErrTooLarge},
		"bad bool":    {func() []byte { b := samples()[1].AppendWire(nil); return append(b[:len(b)-1], 7) }(), ErrMalformed},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(c.b)
			if !errors.Is(err, c.want) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	pb := func(ts int64, p Power) *PowerBatch {
		return &PowerBatch{Origin: Origin{"h", "s"}, Device: Device{UUID: "u"}, Samples: []PowerSample{{ts, p}}}
	}
	bad := map[string]Event{
		"negative power":  pb(ts0, -1),
		"absurd power":    pb(ts0, MaxPower+1),
		"future":          pb(ts0+2e12, 1),
		"past":            pb(1, 1),
		"no host":         &PowerBatch{Origin: Origin{"", "s"}, Device: Device{UUID: "u"}},
		"no uuid":         &PowerBatch{Origin: Origin{"h", "s"}},
		"token ref":       &TokenBatch{RunID: "r", RequestIDs: []string{"a"}, Tokens: []Token{{Request: 1, TS: ts0}}},
		"no run":          &RunEvent{TS: ts0},
		"request order":   &RequestBatch{RunID: "r", Requests: []Request{{ID: "a", Scheduled: ts0, FirstToken: ts0 + 5, LastToken: ts0 + 1}}},
		"energy negative": &EnergyBatch{Origin: Origin{"h", "s"}, Device: Device{UUID: "u"}, Readings: []EnergyReading{{TSBefore: ts0, TSAfter: ts0, Energy: -1}}},
		"clock bounds":    &ClockBatch{Origin: Origin{"h", "s"}, Device: Device{UUID: "u"}, Samples: []ClockSample{{TS: ts0, Offset: 5, Low: 6, High: 9}}},
		"clock absurd":    &ClockBatch{Origin: Origin{"h", "s"}, Device: Device{UUID: "u"}, Samples: []ClockSample{{TS: ts0, Offset: 0, Low: -1, High: 1e15}}},
		"util":            &StateBatch{Origin: Origin{"h", "s"}, Device: Device{UUID: "u"}, Samples: []StateSample{{TS: ts0, UtilGPU: 101}}},
	}
	for name, ev := range bad {
		if err := ev.Validate(ts0-1e12, ts0+1e12); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, ev := range samples() {
		f.Add(ev.AppendWire(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not classified as malformed: %v", err)
			}
			return
		}
		// Whatever decodes must re-encode to something that decodes to
		// the same event.
		b2 := ev.AppendWire(nil)
		ev2, err := Decode(b2)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !bytes.Equal(b2, ev2.AppendWire(nil)) {
			t.Fatal("encoding not stable")
		}
		_ = ev.Validate(0, 1<<62)
	})
}

func TestSubjects(t *testing.T) {
	if got := DeviceSubject(KindPower, "node.1 x", 2); got != "lem.v1.power.node_1_x.2" {
		t.Fatal(got)
	}
	if got := RunSubject(KindToken, "run>*"); got != "lem.v1.token.run__" {
		t.Fatal(got)
	}
	for _, k := range Kinds {
		k2, err := ParseKind(k.String())
		if err != nil || k2 != k {
			t.Fatal(k)
		}
		if TableFor(k) == "" || NewRows(k) == nil {
			t.Fatalf("kind %s has no table", k)
		}
	}
}

func TestMigrationsParse(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[0].ID != 1 || ms[0].MinServer != (ServerVersion{18, 16}) {
		t.Fatalf("migrations: %+v", ms)
	}
	if _, err := ms[0].Render("x; DROP"); err == nil {
		t.Fatal("hostile database name accepted")
	}
	stmts, _ := ms[0].Render("lem")
	for _, s := range stmts {
		if strings.Contains(s, "{db}") || !strings.Contains(s, "lem.") {
			t.Fatalf("not rendered: %s", s)
		}
		for _, banned := range []string{"CODEC", "TTL", "LowCardinality", "DateTime64"} {
			if strings.Contains(s, banned) {
				t.Fatalf("base migration uses %s, which 18.16 lacks", banned)
			}
		}
	}
}

func BenchmarkPowerEncode(b *testing.B) {
	pb := benchBatch()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(pb.AppendWire(nil))))
	for i := 0; i < b.N; i++ {
		buf = pb.AppendWire(buf[:0])
	}
}

func BenchmarkPowerDecode(b *testing.B) {
	data := benchBatch().AppendWire(nil)
	var pb PowerBatch
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if err := pb.DecodeWire(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(pb.Samples))/b.Elapsed().Seconds(), "samples/s")
}

func benchBatch() *PowerBatch {
	pb := &PowerBatch{Origin: Origin{"node-17", "nvml.buffer"}, Device: Device{Index: 1, UUID: "GPU-8c1f0e4a-0000-4000-8000-000000000003", Name: "NVIDIA H200"}}
	for i := 0; i < 50; i++ {
		pb.Samples = append(pb.Samples, PowerSample{TS: ts0 + int64(i)*20_000_000 + int64(i%7)*1000, Power: Power(120_000 + i*997%500_000)})
	}
	return pb
}

// Every documented field has a meaning: an undocumented field is drift.
func TestEventsDocumented(t *testing.T) {
	md := EventsMarkdown()
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") && strings.HasSuffix(line, "|  |") {
			t.Errorf("undocumented field: %s", line)
		}
	}
}

// A request batch encoded before requests gained the server's timings
// (header flag 0) still decodes, with the timings zero.
func TestRequestWithoutServerTimingsDecodes(t *testing.T) {
	old, err := hex.DecodeString("4c454d0104000572756e2d61020272310284d0ab95bfe2e7eb31d20f82c2d72f82a4a7da06c2beb3da06800480010000027232008ed0ab95bfe2e7eb310300000000000211646561646c696e65206578636565646564")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Decode(old)
	if err != nil {
		t.Fatal(err)
	}
	b := ev.(*RequestBatch)
	want := samples()[5].(*RequestBatch).Requests[:2]
	if !reflect.DeepEqual(b.Requests, want) {
		t.Fatalf("got %+v\nwant %+v", b.Requests, want)
	}
}

func TestRenderCluster(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	all := ""
	for _, m := range ms {
		stmts, err := m.RenderCluster("lem", "fleet")
		if err != nil {
			t.Fatal(err)
		}
		all += strings.Join(stmts, ";\n") + ";\n"
	}
	for _, want := range []string{
		"CREATE TABLE IF NOT EXISTS lem.devices_local ON CLUSTER fleet",
		"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/lem/devices_local', '{replica}', seen_ns)",
		"CREATE TABLE IF NOT EXISTS lem.tokens ON CLUSTER fleet AS lem.tokens_local ENGINE = Distributed(fleet, lem, tokens_local, cityHash64(run_id))",
		"ENGINE = Distributed(fleet, lem, power_samples_local, cityHash64(device_uuid))",
		"ALTER TABLE lem.requests_local ON CLUSTER fleet\n    ADD COLUMN server_queue_dur_ns",
		"ALTER TABLE lem.power_samples_local ON CLUSTER fleet\n    MODIFY COLUMN host LowCardinality(String),",
		"MODIFY COLUMN ts_ns Int64 CODEC(DoubleDelta, ZSTD(1)),",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("clustered schema lacks %q", want)
		}
	}
	// Codecs stay off the Distributed tables.
	if strings.Contains(all, "ALTER TABLE lem.power_samples ON CLUSTER fleet\n    MODIFY COLUMN host LowCardinality(String),\n    MODIFY COLUMN source LowCardinality(String),\n    MODIFY COLUMN device_uuid LowCardinality(String),\n    MODIFY COLUMN ts_ns Int64 CODEC") {
		t.Error("codec on a Distributed table")
	}
	if _, err := ms[0].RenderCluster("lem", "bad name"); err == nil {
		t.Error("cluster name not checked")
	}
}

// Request batches written before a field was added decode as before,
// the missing fields zero: header flags make each addition additive
// within wire v1.
func TestOlderRequestBatchesDecode(t *testing.T) {
	var want *RequestBatch
	for _, ev := range samples() {
		if rb, ok := ev.(*RequestBatch); ok {
			want = rb
		}
	}
	for _, c := range []struct {
		name, hex string
		absent    func(*Request) // zeroes what the older batch lacks
	}{
		// Flag 1 only (the server's timings): no chunk kernel-stamped.
		{"before kernel stamps", "4c454d0104010572756e2d61030272310284d0ab95bfe2e7eb31d20f82c2d72f82a4a7da06c2beb3da06800480010000000000027232008ed0ab95bfe2e7eb310300000000000211646561646c696e652065786365656465640000000272330084d0ab95bfe2e7eb3116828ece1c82aaea5582b3e4560709000080be9201c0a6d211a0deba39",
			func(q *Request) { q.KernelStamped, q.SentKernel = 0, false }},
		// Flags 1 and 2: sends read as stamped in user space.
		{"before sent_kernel", "4c454d0104030572756e2d61030272310284d0ab95bfe2e7eb31d20f82c2d72f82a4a7da06c2beb3da0680048001000000000000027232008ed0ab95bfe2e7eb310300000000000211646561646c696e65206578636565646564000000000272330084d0ab95bfe2e7eb3116828ece1c82aaea5582b3e4560709000080be9201c0a6d211a0deba3906",
			func(q *Request) { q.SentKernel = false }},
	} {
		old, err := hex.DecodeString(c.hex)
		if err != nil {
			t.Fatal(err)
		}
		var b RequestBatch
		if err := b.DecodeWire(old); err != nil {
			t.Fatalf("%s: an older request batch no longer decodes: %v", c.name, err)
		}
		if len(b.Requests) != len(want.Requests) {
			t.Fatalf("%s: decoded %d requests", c.name, len(b.Requests))
		}
		for i, q := range b.Requests {
			w := want.Requests[i]
			c.absent(&w)
			if q != w {
				t.Errorf("%s: request %d: %+v, want %+v", c.name, i, q, w)
			}
		}
	}
}
