package schemas

import "fmt"

// maxRowsPerEvent and maxBytesPerEvent bound what EventsOf packs into one
// event, so that the encoded message stays under MaxMessageSize (a
// request row with a long error text is the largest row).
const (
	maxRowsPerEvent  = 2048
	maxBytesPerEvent = MaxMessageSize / 2
)

// EventsOf turns stored rows of an event table back into the events that
// carry them, in the table's row order: rows of one device and source (or
// of one run, and of one endpoint for server metrics) go into one event,
// up to maxRowsPerEvent rows. devices (may be nil) supplies the device
// names and MIG parents that device-scoped tables do not store. It is the
// inverse of the kind's Rows.Append, so that rows read from a store can
// travel again through the wire codec and its validation (a run's bundle
// for the results platform).
func EventsOf(t *Table, devices *Table) ([]Event, error) {
	spec, ok := Spec(t.Name)
	if !ok || spec.Kind == 0 {
		return nil, fmt.Errorf("table %s carries no event kind", t.Name)
	}
	if err := t.Check(); err != nil {
		return nil, err
	}
	names := deviceNames(devices)
	n := t.Rows()
	var out []Event
	var err error
	// size estimates a row's encoded bytes where rows carry strings.
	size := func(int) int { return 64 }
	// group yields [a, b) ranges of consecutive rows with equal keys.
	group := func(key func(i int) string, emit func(a, b int) Event) {
		for a := 0; a < n; {
			b, bytes := a+1, size(a)
			for b < n && b-a < maxRowsPerEvent && bytes+size(b) <= maxBytesPerEvent && key(b) == key(a) {
				bytes += size(b)
				b++
			}
			out = append(out, emit(a, b))
			a = b
		}
	}
	switch spec.Kind {
	case KindPower, KindEnergy, KindState, KindGap, KindClock:
		host, src := colOf[string](t, "host", &err), colOf[string](t, "source", &err)
		idx, uuid := colOf[uint32](t, "device_index", &err), colOf[string](t, "device_uuid", &err)
		if err != nil {
			return nil, err
		}
		key := func(i int) string { return host[i] + "\x00" + src[i] + "\x00" + uuid[i] + "\x00" + fmt.Sprint(idx[i]) }
		origin := func(i int) (Origin, Device) {
			d := names[host[i]+"\x00"+uuid[i]]
			return Origin{Host: host[i], Source: src[i]}, Device{Index: idx[i], UUID: uuid[i], Name: d[0], MIGParent: d[1]}
		}
		switch spec.Kind {
		case KindPower:
			ts, p := colOf[int64](t, "ts_ns", &err), colOf[int64](t, "power_mw", &err)
			if err == nil {
				group(key, func(a, b int) Event {
					e := &PowerBatch{}
					e.Origin, e.Device = origin(a)
					for i := a; i < b; i++ {
						e.Samples = append(e.Samples, PowerSample{TS: ts[i], Power: Power(p[i])})
					}
					return e
				})
			}
		case KindEnergy:
			tb, ta := colOf[int64](t, "ts_before_ns", &err), colOf[int64](t, "ts_after_ns", &err)
			en, rs := colOf[int64](t, "energy_uj", &err), colOf[uint8](t, "reset", &err)
			if err == nil {
				group(key, func(a, b int) Event {
					e := &EnergyBatch{}
					e.Origin, e.Device = origin(a)
					for i := a; i < b; i++ {
						e.Readings = append(e.Readings, EnergyReading{TSBefore: tb[i], TSAfter: ta[i], Energy: Energy(en[i]), Reset: rs[i] != 0})
					}
					return e
				})
			}
		case KindState:
			ts := colOf[int64](t, "ts_ns", &err)
			sm, mem := colOf[uint32](t, "sm_clock_mhz", &err), colOf[uint32](t, "mem_clock_mhz", &err)
			temp, ug, um := colOf[int32](t, "temperature_c", &err), colOf[uint32](t, "util_gpu_pct", &err), colOf[uint32](t, "util_mem_pct", &err)
			used, thr := colOf[uint64](t, "mem_used_bytes", &err), colOf[uint64](t, "throttle_reasons", &err)
			pl, ps := colOf[int64](t, "power_limit_mw", &err), colOf[int32](t, "pstate", &err)
			if err == nil {
				group(key, func(a, b int) Event {
					e := &StateBatch{}
					e.Origin, e.Device = origin(a)
					for i := a; i < b; i++ {
						e.Samples = append(e.Samples, StateSample{TS: ts[i], SMClock: sm[i], MemClock: mem[i], Temperature: temp[i],
							UtilGPU: ug[i], UtilMem: um[i], MemUsed: used[i], ThrottleReasons: thr[i], PowerLimit: Power(pl[i]), PState: ps[i]})
					}
					return e
				})
			}
		case KindGap:
			from, to, why := colOf[int64](t, "from_ns", &err), colOf[int64](t, "to_ns", &err), colOf[string](t, "reason", &err)
			if err == nil {
				group(key, func(a, b int) Event {
					e := &GapBatch{}
					e.Origin, e.Device = origin(a)
					for i := a; i < b; i++ {
						e.Gaps = append(e.Gaps, Gap{From: from[i], To: to[i], Reason: why[i]})
					}
					return e
				})
			}
		case KindClock:
			ts, off := colOf[int64](t, "ts_ns", &err), colOf[int64](t, "offset_dur_ns", &err)
			lo, hi, ap := colOf[int64](t, "low_dur_ns", &err), colOf[int64](t, "high_dur_ns", &err), colOf[int64](t, "applied_dur_ns", &err)
			reads := colOf[uint32](t, "reads", &err)
			if err == nil {
				group(key, func(a, b int) Event {
					e := &ClockBatch{}
					e.Origin, e.Device = origin(a)
					for i := a; i < b; i++ {
						e.Samples = append(e.Samples, ClockSample{TS: ts[i], Offset: off[i], Low: lo[i], High: hi[i], Applied: ap[i], Reads: reads[i]})
					}
					return e
				})
			}
		}
	case KindMetric:
		run, ep, ts := colOf[string](t, "run_id", &err), colOf[string](t, "endpoint", &err), colOf[int64](t, "ts_ns", &err)
		name, lab, val := colOf[string](t, "name", &err), colOf[string](t, "labels", &err), colOf[float64](t, "value", &err)
		if err == nil {
			size = func(i int) int { return 32 + len(name[i]) + len(lab[i]) }
			group(func(i int) string { return run[i] + "\x00" + ep[i] }, func(a, b int) Event {
				e := &MetricBatch{RunID: run[a], Endpoint: ep[a]}
				for i := a; i < b; i++ {
					e.Samples = append(e.Samples, MetricSample{TS: ts[i], Name: name[i], Labels: lab[i], Value: val[i]})
				}
				return e
			})
		}
	case KindRequest:
		run, id, cyc := colOf[string](t, "run_id", &err), colOf[string](t, "request_id", &err), colOf[uint32](t, "cycle", &err)
		sch, sent, ft := colOf[int64](t, "scheduled_ns", &err), colOf[int64](t, "sent_ns", &err), colOf[int64](t, "first_token_ns", &err)
		lt, done := colOf[int64](t, "last_token_ns", &err), colOf[int64](t, "done_ns", &err)
		pt, ot := colOf[uint32](t, "prompt_tokens", &err), colOf[uint32](t, "output_tokens", &err)
		st, msg := colOf[string](t, "status", &err), colOf[string](t, "error", &err)
		sq, sp, sd := colOf[int64](t, "server_queue_dur_ns", &err), colOf[int64](t, "server_prefill_dur_ns", &err), colOf[int64](t, "server_decode_dur_ns", &err)
		ks, sk := colOf[uint32](t, "kernel_stamped", &err), colOf[uint8](t, "sent_kernel", &err)
		if err == nil {
			size = func(i int) int { return 128 + len(id[i]) + len(msg[i]) }
			group(func(i int) string { return run[i] }, func(a, b int) Event {
				e := &RequestBatch{RunID: run[a]}
				for i := a; i < b; i++ {
					e.Requests = append(e.Requests, Request{ID: id[i], Cycle: cyc[i], Scheduled: sch[i], Sent: sent[i], FirstToken: ft[i],
						LastToken: lt[i], Done: done[i], PromptTokens: pt[i], OutputTokens: ot[i], Status: ParseRequestStatus(st[i]),
						Error: msg[i], ServerQueue: sq[i], ServerPrefill: sp[i], ServerDecode: sd[i], KernelStamped: ks[i],
						SentKernel: sk[i] != 0})
				}
				return e
			})
		}
	case KindToken:
		run, req := colOf[string](t, "run_id", &err), colOf[string](t, "request_id", &err)
		idx, ts, nt := colOf[uint32](t, "token_index", &err), colOf[int64](t, "ts_ns", &err), colOf[uint32](t, "tokens", &err)
		if err == nil {
			group(func(i int) string { return run[i] }, func(a, b int) Event {
				e := &TokenBatch{RunID: run[a]}
				ref := map[string]uint32{}
				for i := a; i < b; i++ {
					r, ok := ref[req[i]]
					if !ok {
						r = uint32(len(e.RequestIDs))
						ref[req[i]] = r
						e.RequestIDs = append(e.RequestIDs, req[i])
					}
					e.Tokens = append(e.Tokens, Token{Request: r, Index: idx[i], TS: ts[i], Tokens: nt[i]})
				}
				return e
			})
		}
	case KindRun:
		run, exp, cyc := colOf[string](t, "run_id", &err), colOf[string](t, "experiment", &err), colOf[uint32](t, "cycle", &err)
		ph, ts, be := colOf[string](t, "phase", &err), colOf[int64](t, "ts_ns", &err), colOf[string](t, "backend", &err)
		model, host, devs := colOf[string](t, "model", &err), colOf[string](t, "host", &err), colOf[[]string](t, "devices", &err)
		cfg, inv := colOf[string](t, "config", &err), colOf[string](t, "inventory", &err)
		if err == nil {
			for i := range n {
				out = append(out, &RunEvent{RunID: run[i], Experiment: exp[i], Cycle: cyc[i], Phase: ParseRunPhase(ph[i]), TS: ts[i],
					Backend: be[i], Model: model[i], Host: host[i], Devices: devs[i], Config: cfg[i], Inventory: inv[i]})
			}
		}
	case KindPlatform:
		ts, typ, sub := colOf[int64](t, "ts_ns", &err), colOf[string](t, "type", &err), colOf[string](t, "subject", &err)
		act, pay := colOf[string](t, "actor", &err), colOf[string](t, "payload", &err)
		if err == nil {
			for i := range n {
				out = append(out, &PlatformEvent{TS: ts[i], Type: typ[i], Subject: sub[i], Actor: act[i], Payload: pay[i]})
			}
		}
	default:
		return nil, fmt.Errorf("table %s: kind %s has no inverse", t.Name, spec.Kind)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// colOf returns the values of t's column name, recording in *err a column
// that is missing or of another type.
func colOf[T any](t *Table, name string, err *error) []T {
	c, ok := t.Column(name).(*Col[T])
	if !ok {
		if *err == nil {
			*err = fmt.Errorf("table %s: column %s missing or not of the expected type", t.Name, name)
		}
		return nil
	}
	return c.V
}

// deviceNames maps host + uuid to the device's name and MIG parent.
func deviceNames(t *Table) map[string][2]string {
	m := map[string][2]string{}
	if t == nil {
		return m
	}
	var err error
	host, uuid := colOf[string](t, "host", &err), colOf[string](t, "device_uuid", &err)
	name, mig := colOf[string](t, "device_name", &err), colOf[string](t, "mig_parent_uuid", &err)
	if err != nil {
		return m
	}
	for i := range host {
		m[host[i]+"\x00"+uuid[i]] = [2]string{name[i], mig[i]}
	}
	return m
}
