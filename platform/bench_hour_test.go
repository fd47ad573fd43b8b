package platform

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// fullHourStore writes a complete synthetic run of one hour on 8 GPUs: an
// idle baseline of 60 s and three cycles of 19 minutes, power at 50 Hz
// (1.44 M samples), the energy counter at 10 Hz consistent with it (288 k
// readings), and 16 requests in flight per GPU of 20 streamed tokens each
// (≈ 2.5 M token events and 120 k requests) — about the 1.5 M
// events of telemetry plus the load.
func fullHourStore(b testing.TB, minutes int) (*store.Store, string, int) {
	b.Helper()
	const run = "hour-8gpu-full"
	w := newBenchRun(b)
	t0, devs, pos, write := w.t0, w.devs, w.pos, w.write
	hour := int64(minutes) * 60e9
	base := int64(60e9)
	cyc := (hour - base - 2*int64(30e9)) / 3 // three cycles with two 30 s pauses
	var cycles [][2]int64
	for c := range 3 {
		from := t0 + base + int64(c)*(cyc+int64(30e9))
		cycles = append(cycles, [2]int64{from, from + cyc})
	}
	busy := func(ts int64) (int, bool) {
		for i, c := range cycles {
			if ts >= c[0] && ts < c[1] {
				return i, true
			}
		}
		return 0, false
	}
	cfg := `{"backend":{"kind":"vllm","model":"llama-3-8b","precision":"bf16","parallelism":{"tensor":8}},"workload":{"arrival":{"process":"concurrency","concurrency":128},"dataset":{"kind":"synthetic","prompt_tokens":{"mean":512},"output_tokens":{"mean":20}},"requests":40000}}`
	runs := schemas.NewRows(schemas.KindRun)
	ev := func(c uint32, ph schemas.RunPhase, ts int64) {
		runs.Append(&schemas.RunEvent{RunID: run, Experiment: "bench", Cycle: c, Phase: ph, TS: ts, Backend: "vllm", Model: "llama-3-8b",
			Host: "node", Devices: devs, Config: cfg, Inventory: "{}"}, pos())
	}
	ev(0, schemas.RunStart, t0)
	ev(0, schemas.RunBaseline, t0+base)
	for i, c := range cycles {
		ev(uint32(i), schemas.RunStart, c[0])
		ev(uint32(i), schemas.RunEnd, c[1])
	}
	write(runs)
	powerAt := func(d int, ts int64) int64 { // mW
		if _, ok := busy(ts); ok {
			return 450_000 + int64((ts/20e6+int64(d)*7)%97)*1000
		}
		return 90_000 + int64(d)*1000
	}
	for d, uuid := range devs {
		dev := schemas.Device{Index: uint32(d), UUID: uuid, Name: "NVIDIA H200"}
		var energy int64 = 1e12
		for m := range minutes {
			pw := schemas.NewRows(schemas.KindPower)
			en := schemas.NewRows(schemas.KindEnergy)
			st := schemas.NewRows(schemas.KindState)
			pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "node", Source: schemas.SourceNVMLBuffer}, Device: dev}
			eb := &schemas.EnergyBatch{Origin: schemas.Origin{Host: "node", Source: "nvml.counter"}, Device: dev}
			sb := &schemas.StateBatch{Origin: schemas.Origin{Host: "node", Source: "nvml"}, Device: dev}
			for i := range 3000 {
				ts := t0 + int64(m)*60e9 + int64(i)*20e6
				p := powerAt(d, ts)
				pb.Samples = append(pb.Samples, schemas.PowerSample{TS: ts, Power: schemas.Power(p)})
				energy += p * 20 // mW × 20 ms = µJ
				if i%5 == 4 {
					eb.Readings = append(eb.Readings, schemas.EnergyReading{TSBefore: ts + 19e6, TSAfter: ts + 20e6, Energy: schemas.Energy(energy)})
				}
				if i%50 == 0 {
					sb.Samples = append(sb.Samples, schemas.StateSample{TS: ts, SMClock: 1980, PowerLimit: 700 * schemas.Watt, Temperature: 50})
				}
			}
			pw.Append(pb, pos())
			en.Append(eb, pos())
			st.Append(sb, pos())
			write(pw)
			write(en)
			write(st)
		}
	}
	// 128 requests in flight, each 512 prompt tokens then 20 tokens 50 ms apart.
	reqs := schemas.NewRows(schemas.KindRequest)
	toks := schemas.NewRows(schemas.KindToken)
	n := 0
	for c, cy := range cycles {
		for lane := range 128 {
			for ts := cy[0] + int64(lane)*7e6; ts+1.2e9 < cy[1]; ts += 1.2e9 {
				id := fmt.Sprintf("r%d", n)
				n++
				first := ts + 150e6
				tb := &schemas.TokenBatch{RunID: run, RequestIDs: []string{id}}
				for k := range 20 {
					tb.Tokens = append(tb.Tokens, schemas.Token{Request: 0, Index: uint32(k), TS: first + int64(k)*50e6, Tokens: 1})
				}
				last := first + 19*50e6
				reqs.Append(&schemas.RequestBatch{RunID: run, Requests: []schemas.Request{{ID: id, Cycle: uint32(c), Scheduled: ts, Sent: ts,
					FirstToken: first, LastToken: last, Done: last + 1e6, PromptTokens: 512, OutputTokens: 20}}}, pos())
				toks.Append(tb, pos())
				if reqs.Table().Rows() >= 20_000 {
					write(reqs)
					write(toks)
					reqs, toks = schemas.NewRows(schemas.KindRequest), schemas.NewRows(schemas.KindToken)
				}
			}
		}
	}
	write(reqs)
	write(toks)
	return store.Wrap(w.ps), run, n
}

// BenchmarkVerifyHour8GPU: a run on 8 GPUs of 11 minutes (the
// issue's 1.5 M events) and of an hour, its bundle decoded, validated,
// every figure recomputed and checked, as an upload is.
func BenchmarkVerifyHour8GPU(b *testing.B) {
	for _, minutes := range []int{11, 60} {
		b.Run(fmt.Sprintf("minutes=%d", minutes), func(b *testing.B) { benchVerify(b, minutes) })
	}
}

func benchVerify(b *testing.B, minutes int) {
	st, run, n := fullHourStore(b, minutes)
	var buf bytes.Buffer
	m, _, err := WriteBundle(context.Background(), st, run, "bench", &buf)
	if err != nil {
		b.Fatal(err)
	}
	rows := 0
	for _, r := range m.Rows {
		rows += r
	}
	b.Logf("%d requests; bundle of %d events, %d rows, %d MB", n, m.Events, rows, buf.Len()>>20)
	b.ResetTimer()
	for range b.N {
		bd, err := ReadBundle(bytes.NewReader(buf.Bytes()), DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		_, rep, err := Verify(context.Background(), bd.Store(), run, bd.Manifest.Results)
		if err != nil {
			b.Fatal(err)
		}
		if !rep.Passed() {
			b.Fatalf("the synthetic run failed verification: %s", rep.Failures())
		}
	}
	b.ReportMetric(float64(rows), "rows")
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
