package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/schemas"
	pqstore "github.com/llm-energy-measure/lem/store/parquet"
)

// longRun shapes a simulated long run written straight into a Parquet
// store, as ingest would have written it: one file per kind per minute
// (ingest's blocks), the driver buffer at 50 Hz and the counter at 1 Hz
// for every GPU, requests at a steady rate, cycles back to back.
type longRun struct {
	GPUs        int
	Minutes     int
	CycleMin    int     // minutes per cycle
	RequestsPer float64 // requests per second
}

// samples is the power samples the run holds.
func (r longRun) samples() int64 { return int64(r.GPUs) * int64(r.Minutes) * 60 * 50 }

func (r longRun) requests() int64 { return int64(float64(r.Minutes*60) * r.RequestsPer) }

// write builds the store under dir (kept between benchmark runs: a file
// named done marks it complete) and returns the run's id.
func (r longRun) write(tb testing.TB, dir string) string {
	const runID = "longrun"
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return runID
	}
	os.RemoveAll(dir)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Host: "bench", Devices: r.GPUs, Seed: 7, Counter: time.Second,
		Load: func(d int, ts int64) float64 { return 0.5 + 0.4*math.Sin(float64(ts-t0)/60e9+float64(d)) }}, start)
	var uuids []string
	for _, d := range s.Devices() {
		uuids = append(uuids, d.UUID)
	}
	seq := map[schemas.Kind]uint64{}
	write := func(rows schemas.Rows, k schemas.Kind) {
		t := rows.Table()
		if t.Rows() == 0 {
			return
		}
		first := seq[k] + 1
		seq[k] = first
		if err := pqstore.WriteFileRowGroups(pqstore.BatchPath(dir, t.Name, 1, first, first), t, nil, pqstore.BatchRowGroupRows); err != nil {
			tb.Fatal(err)
		}
	}
	runEvent := func(rows schemas.Rows, c int, ph schemas.RunPhase, ts int64) {
		rows.Append(&schemas.RunEvent{RunID: runID, Experiment: "longrun", Cycle: uint32(c), Phase: ph, TS: ts,
			Backend: "vllm", Model: "sim", Host: "bench", Devices: uuids, Config: `{"cycles":` + strconv.Itoa(r.Minutes/r.CycleMin) + `}`},
			schemas.Position{Epoch: 1, Seq: seq[schemas.KindRun] + 1})
	}
	gap := int64(1e9 / r.RequestsPer)
	nextReq := t0 + gap
	reqN := 0
	for m := 0; m < r.Minutes; m++ {
		from, to := t0+int64(m)*60e9, t0+int64(m+1)*60e9
		pw, en := schemas.NewRows(schemas.KindPower), schemas.NewRows(schemas.KindEnergy)
		for i := range uuids {
			for sec := from + 1e9; sec <= to; sec += 1e9 {
				pb, eb := s.Advance(i, sec)
				pw.Append(pb, schemas.Position{Epoch: 1, Seq: seq[schemas.KindPower] + 1})
				en.Append(eb, schemas.Position{Epoch: 1, Seq: seq[schemas.KindEnergy] + 1})
			}
		}
		write(pw, schemas.KindPower)
		write(en, schemas.KindEnergy)
		runs := schemas.NewRows(schemas.KindRun)
		if m%r.CycleMin == 0 {
			runEvent(runs, m/r.CycleMin, schemas.RunStart, from)
		}
		cycle := m / r.CycleMin
		rq := &schemas.RequestBatch{RunID: runID}
		for ; nextReq < to; nextReq += gap {
			done := min(nextReq+2e9, t0+int64(cycle+1)*int64(r.CycleMin)*60e9-1)
			rq.Requests = append(rq.Requests, schemas.Request{ID: "q" + strconv.Itoa(reqN), Cycle: uint32(cycle), Scheduled: nextReq,
				Sent: nextReq + 1e5, FirstToken: min(nextReq+5e7, done), LastToken: done, Done: done, PromptTokens: 512,
				OutputTokens: 128, Status: schemas.StatusOK})
			reqN++
		}
		rrows := schemas.NewRows(schemas.KindRequest)
		rrows.Append(rq, schemas.Position{Epoch: 1, Seq: seq[schemas.KindRequest] + 1})
		write(rrows, schemas.KindRequest)
		if (m+1)%r.CycleMin == 0 {
			runEvent(runs, m/r.CycleMin, schemas.RunEnd, to-1)
		}
		write(runs, schemas.KindRun)
	}
	if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	return runID
}

// BenchmarkLongRunMemory: `lem export` (and `lem analyze`, reported)
// of a long run of 64 GPUs from the Parquet store, at sizes growing by
// 4×: peak RSS of the process and wall time. Export streams in chunks, so
// its peak stays flat while the data grows (issue 17: under 2 GiB at
// 24 h × 64 GPUs ≈ 276 M samples, 10 M requests). LEM_LONGRUN_HOURS
// (e.g. "1.5,6,24") picks the sizes; the stores are kept under
// .cache/longrun-* between runs.
func BenchmarkLongRunMemory(b *testing.B) {
	bin := buildLem(b)
	hours := []float64{1.5, 6, 24}
	if v := os.Getenv("LEM_LONGRUN_HOURS"); v != "" {
		hours = nil
		for _, f := range strings.Split(v, ",") {
			h, err := strconv.ParseFloat(f, 64)
			if err != nil {
				b.Fatalf("LEM_LONGRUN_HOURS: %v", err)
			}
			hours = append(hours, h)
		}
	}
	for _, h := range hours {
		r := longRun{GPUs: 64, Minutes: int(h * 60), CycleMin: min(30, int(h*60)), RequestsPer: 10e6 / 86400}
		b.Run(fmt.Sprintf("%gh", h), func(b *testing.B) {
			dir, err := filepath.Abs(filepath.Join("..", "..", ".cache", fmt.Sprintf("longrun-%gh", h)))
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			run := r.write(b, dir)
			b.Logf("%g h × %d GPUs: %d power samples, %d requests (store written or reused in %v)", h, r.GPUs, r.samples(), r.requests(), time.Since(t0).Round(time.Second))
			for i := 0; i < b.N; i++ {
				out := b.TempDir()
				rss, secs := measure(b, bin, "export", "-parquet", dir, "-run", run, "-format", "parquet", "-out", out, "-log-format", "console")
				b.ReportMetric(rss, "export-maxrss-MiB")
				b.ReportMetric(secs, "export-s")
				b.ReportMetric(float64(r.samples())/secs/1e6, "export-Msamples/s")
				if os.Getenv("LEM_LONGRUN_ANALYZE") != "" {
					rss, secs := measure(b, bin, "analyze", "-parquet", dir, "-log-format", "console", run)
					b.ReportMetric(rss, "analyze-maxrss-MiB")
					b.ReportMetric(secs, "analyze-s")
				}
			}
		})
	}
}

// measure runs lem with args and returns its peak RSS (MiB) and seconds.
func measure(b *testing.B, bin string, args ...string) (float64, float64) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("lem %s: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 3000))
	}
	secs := time.Since(start).Seconds()
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return float64(ru.Maxrss) / 1024, secs
}
