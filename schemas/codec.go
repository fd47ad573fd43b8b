package schemas

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("invalid event")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// MaxPower is the largest plausible power of one device (a sanity bound,
// not the power limit: samples may exceed the limit and are never clamped).
const MaxPower = 100 * 1000 * Watt

func checkTS(what string, ts, minTS, maxTS int64) error {
	if ts < minTS || ts > maxTS {
		return invalid("%s timestamp %d outside [%d, %d]", what, ts, minTS, maxTS)
	}
	return nil
}

func (o *Origin) validate() error {
	if o.Host == "" {
		return invalid("empty host")
	}
	if o.Source == "" {
		return invalid("empty source")
	}
	return nil
}

func validateSource(o *Origin, d *Device) error {
	if err := o.validate(); err != nil {
		return err
	}
	return d.validate()
}

func (d *Device) validate() error {
	if d.UUID == "" {
		return invalid("device %d has no UUID", d.Index)
	}
	return nil
}

// --- power

func (*PowerBatch) Kind() Kind { return KindPower }

func (b *PowerBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindPower)
	dst = appendOrigin(dst, &b.Origin)
	dst = appendDevice(dst, &b.Device)
	dst = appendUint(dst, uint64(len(b.Samples)))
	var prev int64
	for _, s := range b.Samples {
		dst = appendInt(dst, s.TS-prev)
		dst = appendInt(dst, int64(s.Power))
		prev = s.TS
	}
	return dst
}

func (b *PowerBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindPower)
	if err != nil {
		return err
	}
	r.origin(&b.Origin)
	r.device(&b.Device)
	n := r.count(2)
	b.Samples = grow(b.Samples, n)
	var prev int64
	for i := range b.Samples {
		prev += r.int()
		b.Samples[i] = PowerSample{TS: prev, Power: Power(r.int())}
	}
	if err := r.done(); err != nil {
		b.Samples = b.Samples[:0]
		return fmt.Errorf("decoding power batch: %w", err)
	}
	return nil
}

func (b *PowerBatch) Validate(minTS, maxTS int64) error {
	if err := validateSource(&b.Origin, &b.Device); err != nil {
		return err
	}
	for i, s := range b.Samples {
		if err := checkTS("power sample", s.TS, minTS, maxTS); err != nil {
			return err
		}
		if s.Power < 0 || s.Power > MaxPower {
			return invalid("power sample %d: %d mW out of range", i, s.Power)
		}
	}
	return nil
}

// --- energy

func (*EnergyBatch) Kind() Kind { return KindEnergy }

func (b *EnergyBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindEnergy)
	dst = appendOrigin(dst, &b.Origin)
	dst = appendDevice(dst, &b.Device)
	dst = appendUint(dst, uint64(len(b.Readings)))
	var prev int64
	for _, e := range b.Readings {
		dst = appendInt(dst, e.TSBefore-prev)
		dst = appendInt(dst, e.TSAfter-e.TSBefore)
		dst = appendInt(dst, int64(e.Energy))
		dst = appendBool(dst, e.Reset)
		prev = e.TSBefore
	}
	return dst
}

func (b *EnergyBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindEnergy)
	if err != nil {
		return err
	}
	r.origin(&b.Origin)
	r.device(&b.Device)
	n := r.count(4)
	b.Readings = grow(b.Readings, n)
	var prev int64
	for i := range b.Readings {
		e := &b.Readings[i]
		prev += r.int()
		e.TSBefore = prev
		e.TSAfter = prev + r.int()
		e.Energy = Energy(r.int())
		e.Reset = r.bool()
	}
	if err := r.done(); err != nil {
		b.Readings = b.Readings[:0]
		return fmt.Errorf("decoding energy batch: %w", err)
	}
	return nil
}

func (b *EnergyBatch) Validate(minTS, maxTS int64) error {
	if err := validateSource(&b.Origin, &b.Device); err != nil {
		return err
	}
	for i, e := range b.Readings {
		if err := checkTS("energy reading", e.TSBefore, minTS, maxTS); err != nil {
			return err
		}
		if e.TSAfter < e.TSBefore {
			return invalid("energy reading %d: after-stamp precedes before-stamp", i)
		}
		if e.Energy < 0 {
			return invalid("energy reading %d: negative counter %d", i, e.Energy)
		}
	}
	return nil
}

// --- state

func (*StateBatch) Kind() Kind { return KindState }

func (b *StateBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindState)
	dst = appendOrigin(dst, &b.Origin)
	dst = appendDevice(dst, &b.Device)
	dst = appendUint(dst, uint64(len(b.Samples)))
	var prev int64
	for _, s := range b.Samples {
		dst = appendInt(dst, s.TS-prev)
		dst = appendUint(dst, uint64(s.SMClock))
		dst = appendUint(dst, uint64(s.MemClock))
		dst = appendInt(dst, int64(s.Temperature))
		dst = appendUint(dst, uint64(s.UtilGPU))
		dst = appendUint(dst, uint64(s.UtilMem))
		dst = appendUint(dst, s.MemUsed)
		dst = appendUint(dst, s.ThrottleReasons)
		dst = appendInt(dst, int64(s.PowerLimit))
		dst = appendInt(dst, int64(s.PState))
		prev = s.TS
	}
	return dst
}

func (b *StateBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindState)
	if err != nil {
		return err
	}
	r.origin(&b.Origin)
	r.device(&b.Device)
	n := r.count(10)
	b.Samples = grow(b.Samples, n)
	var prev int64
	for i := range b.Samples {
		s := &b.Samples[i]
		prev += r.int()
		s.TS = prev
		s.SMClock = r.uint32()
		s.MemClock = r.uint32()
		s.Temperature = r.int32()
		s.UtilGPU = r.uint32()
		s.UtilMem = r.uint32()
		s.MemUsed = r.uint()
		s.ThrottleReasons = r.uint()
		s.PowerLimit = Power(r.int())
		s.PState = r.int32()
	}
	if err := r.done(); err != nil {
		b.Samples = b.Samples[:0]
		return fmt.Errorf("decoding state batch: %w", err)
	}
	return nil
}

func (b *StateBatch) Validate(minTS, maxTS int64) error {
	if err := validateSource(&b.Origin, &b.Device); err != nil {
		return err
	}
	for i, s := range b.Samples {
		if err := checkTS("state sample", s.TS, minTS, maxTS); err != nil {
			return err
		}
		if s.UtilGPU > 100 || s.UtilMem > 100 {
			return invalid("state sample %d: utilisation over 100%%", i)
		}
		if s.PowerLimit < 0 || s.PowerLimit > MaxPower {
			return invalid("state sample %d: power limit %d mW out of range", i, s.PowerLimit)
		}
	}
	return nil
}

// --- gap

func (*GapBatch) Kind() Kind { return KindGap }

func (b *GapBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindGap)
	dst = appendOrigin(dst, &b.Origin)
	dst = appendDevice(dst, &b.Device)
	dst = appendUint(dst, uint64(len(b.Gaps)))
	for _, g := range b.Gaps {
		dst = appendInt(dst, g.From)
		dst = appendInt(dst, g.To-g.From)
		dst = appendString(dst, g.Reason)
	}
	return dst
}

func (b *GapBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindGap)
	if err != nil {
		return err
	}
	r.origin(&b.Origin)
	r.device(&b.Device)
	n := r.count(3)
	b.Gaps = grow(b.Gaps, n)
	for i := range b.Gaps {
		g := &b.Gaps[i]
		g.From = r.int()
		g.To = g.From + r.int()
		g.Reason = r.string(MaxShortString)
	}
	if err := r.done(); err != nil {
		b.Gaps = b.Gaps[:0]
		return fmt.Errorf("decoding gap batch: %w", err)
	}
	return nil
}

func (b *GapBatch) Validate(minTS, maxTS int64) error {
	if err := validateSource(&b.Origin, &b.Device); err != nil {
		return err
	}
	for i, g := range b.Gaps {
		if err := checkTS("gap", g.From, minTS, maxTS); err != nil {
			return err
		}
		if g.To < g.From {
			return invalid("gap %d ends before it starts", i)
		}
	}
	return nil
}

// --- clock

func (*ClockBatch) Kind() Kind { return KindClock }

func (b *ClockBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindClock)
	dst = appendOrigin(dst, &b.Origin)
	dst = appendDevice(dst, &b.Device)
	dst = appendUint(dst, uint64(len(b.Samples)))
	var prev int64
	for _, c := range b.Samples {
		dst = appendInt(dst, c.TS-prev)
		dst = appendInt(dst, c.Offset)
		dst = appendInt(dst, c.Low-c.Offset)
		dst = appendInt(dst, c.High-c.Offset)
		dst = appendInt(dst, c.Applied)
		dst = appendUint(dst, uint64(c.Reads))
		prev = c.TS
	}
	return dst
}

func (b *ClockBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindClock)
	if err != nil {
		return err
	}
	r.origin(&b.Origin)
	r.device(&b.Device)
	n := r.count(6)
	b.Samples = grow(b.Samples, n)
	var prev int64
	for i := range b.Samples {
		c := &b.Samples[i]
		prev += r.int()
		c.TS = prev
		c.Offset = r.int()
		c.Low = c.Offset + r.int()
		c.High = c.Offset + r.int()
		c.Applied = r.int()
		c.Reads = r.uint32()
	}
	if err := r.done(); err != nil {
		b.Samples = b.Samples[:0]
		return fmt.Errorf("decoding clock batch: %w", err)
	}
	return nil
}

// maxClockOffset bounds a plausible sensor-clock offset (a day): beyond it
// the stamps are not a clock of this host.
const maxClockOffset = int64(24 * 3600 * 1e9)

func (b *ClockBatch) Validate(minTS, maxTS int64) error {
	if err := validateSource(&b.Origin, &b.Device); err != nil {
		return err
	}
	for i, c := range b.Samples {
		if err := checkTS("clock", c.TS, minTS, maxTS); err != nil {
			return err
		}
		if c.Low > c.Offset || c.Offset > c.High {
			return invalid("clock sample %d: offset %d outside its bounds [%d, %d]", i, c.Offset, c.Low, c.High)
		}
		if c.Low < -maxClockOffset || c.High > maxClockOffset || c.Applied < -maxClockOffset || c.Applied > maxClockOffset {
			return invalid("clock sample %d: offset beyond ±1 day", i)
		}
	}
	return nil
}

// --- metric

func (*MetricBatch) Kind() Kind { return KindMetric }

func (b *MetricBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindMetric)
	dst = appendString(dst, b.RunID)
	dst = appendString(dst, b.Endpoint)
	dst = appendUint(dst, uint64(len(b.Samples)))
	var prev int64
	for _, m := range b.Samples {
		dst = appendInt(dst, m.TS-prev)
		dst = appendString(dst, m.Name)
		dst = appendString(dst, m.Labels)
		dst = appendFloat(dst, m.Value)
		prev = m.TS
	}
	return dst
}

func (b *MetricBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindMetric)
	if err != nil {
		return err
	}
	b.RunID = r.string(MaxShortString)
	b.Endpoint = r.string(MaxShortString)
	n := r.count(11)
	b.Samples = grow(b.Samples, n)
	var prev int64
	for i := range b.Samples {
		m := &b.Samples[i]
		prev += r.int()
		m.TS = prev
		m.Name = r.string(MaxShortString)
		m.Labels = r.string(MaxShortString)
		m.Value = r.float()
	}
	if err := r.done(); err != nil {
		b.Samples = b.Samples[:0]
		return fmt.Errorf("decoding metric batch: %w", err)
	}
	return nil
}

func (b *MetricBatch) Validate(minTS, maxTS int64) error {
	if b.RunID == "" {
		return invalid("empty run id")
	}
	for i, m := range b.Samples {
		if err := checkTS("metric", m.TS, minTS, maxTS); err != nil {
			return err
		}
		if m.Name == "" {
			return invalid("metric sample %d has no name", i)
		}
		if math.IsInf(m.Value, 0) {
			// Bucket bounds live in the le label; a sample value is never
			// infinite. NaN is kept: Prometheus uses it for "no value".
			return invalid("metric %s: infinite value", m.Name)
		}
	}
	return nil
}

// --- request

func (*RequestBatch) Kind() Kind { return KindRequest }

func (b *RequestBatch) AppendWire(dst []byte) []byte {
	dst = appendHeaderFlags(dst, KindRequest, flagServerTimings|flagKernelStamps|flagSentKernel)
	dst = appendString(dst, b.RunID)
	dst = appendUint(dst, uint64(len(b.Requests)))
	for i := range b.Requests {
		q := &b.Requests[i]
		dst = appendString(dst, q.ID)
		dst = appendUint(dst, uint64(q.Cycle))
		dst = appendInt(dst, q.Scheduled)
		// Later stamps relative to Scheduled; 0 stays "did not happen".
		dst = appendInt(dst, rel(q.Sent, q.Scheduled))
		dst = appendInt(dst, rel(q.FirstToken, q.Scheduled))
		dst = appendInt(dst, rel(q.LastToken, q.Scheduled))
		dst = appendInt(dst, rel(q.Done, q.Scheduled))
		dst = appendUint(dst, uint64(q.PromptTokens))
		dst = appendUint(dst, uint64(q.OutputTokens))
		dst = append(dst, byte(q.Status))
		dst = appendString(dst, q.Error)
		dst = appendInt(dst, q.ServerQueue)
		dst = appendInt(dst, q.ServerPrefill)
		dst = appendInt(dst, q.ServerDecode)
		dst = appendUint(dst, uint64(q.KernelStamped))
		dst = appendBool(dst, q.SentKernel)
	}
	return dst
}

// rel encodes t relative to base, keeping 0 as "absent" by shifting
// present values by one.
func rel(t, base int64) int64 {
	if t == 0 {
		return 0
	}
	d := t - base
	if d >= 0 {
		return d + 1
	}
	return d
}

func unrel(v, base int64) int64 {
	switch {
	case v == 0:
		return 0
	case v > 0:
		return base + v - 1
	default:
		return base + v
	}
}

func (b *RequestBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindRequest)
	if err != nil {
		return err
	}
	b.RunID = r.string(MaxShortString)
	n := r.count(12)
	b.Requests = grow(b.Requests, n)
	for i := range b.Requests {
		q := &b.Requests[i]
		q.ID = r.string(MaxShortString)
		q.Cycle = r.uint32()
		q.Scheduled = r.int()
		q.Sent = unrel(r.int(), q.Scheduled)
		q.FirstToken = unrel(r.int(), q.Scheduled)
		q.LastToken = unrel(r.int(), q.Scheduled)
		q.Done = unrel(r.int(), q.Scheduled)
		q.PromptTokens = r.uint32()
		q.OutputTokens = r.uint32()
		q.Status = RequestStatus(r.uint8())
		q.Error = r.string(MaxLongString)
		q.ServerQueue, q.ServerPrefill, q.ServerDecode = 0, 0, 0
		if r.flags&flagServerTimings != 0 {
			q.ServerQueue, q.ServerPrefill, q.ServerDecode = r.int(), r.int(), r.int()
		}
		q.KernelStamped = 0
		if r.flags&flagKernelStamps != 0 {
			q.KernelStamped = r.uint32()
		}
		q.SentKernel = false
		if r.flags&flagSentKernel != 0 {
			q.SentKernel = r.bool()
		}
	}
	if err := r.done(); err != nil {
		b.Requests = b.Requests[:0]
		return fmt.Errorf("decoding request batch: %w", err)
	}
	return nil
}

func (b *RequestBatch) Validate(minTS, maxTS int64) error {
	if b.RunID == "" {
		return invalid("empty run id")
	}
	for i := range b.Requests {
		q := &b.Requests[i]
		if q.ID == "" {
			return invalid("request %d has no id", i)
		}
		if q.Status > StatusCancelled {
			return invalid("request %s: unknown status %d", q.ID, q.Status)
		}
		if q.ServerQueue < 0 || q.ServerPrefill < 0 || q.ServerDecode < 0 {
			return invalid("request %s: negative server timing", q.ID)
		}
		if err := checkTS("request scheduled", q.Scheduled, minTS, maxTS); err != nil {
			return err
		}
		for _, t := range [...]int64{q.Sent, q.FirstToken, q.LastToken, q.Done} {
			if t != 0 {
				if err := checkTS("request "+q.ID, t, minTS, maxTS); err != nil {
					return err
				}
			}
		}
		if q.FirstToken != 0 && q.LastToken != 0 && q.LastToken < q.FirstToken {
			return invalid("request %s: last token before first token", q.ID)
		}
	}
	return nil
}

// --- token

func (*TokenBatch) Kind() Kind { return KindToken }

func (b *TokenBatch) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindToken)
	dst = appendString(dst, b.RunID)
	dst = appendUint(dst, uint64(len(b.RequestIDs)))
	for _, id := range b.RequestIDs {
		dst = appendString(dst, id)
	}
	dst = appendUint(dst, uint64(len(b.Tokens)))
	var prev int64
	for _, t := range b.Tokens {
		dst = appendUint(dst, uint64(t.Request))
		dst = appendUint(dst, uint64(t.Index))
		dst = appendInt(dst, t.TS-prev)
		dst = appendUint(dst, uint64(t.Tokens))
		prev = t.TS
	}
	return dst
}

func (b *TokenBatch) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindToken)
	if err != nil {
		return err
	}
	b.RunID = r.string(MaxShortString)
	n := r.count(1)
	b.RequestIDs = grow(b.RequestIDs, n)
	for i := range b.RequestIDs {
		b.RequestIDs[i] = r.string(MaxShortString)
	}
	n = r.count(4)
	b.Tokens = grow(b.Tokens, n)
	var prev int64
	for i := range b.Tokens {
		t := &b.Tokens[i]
		t.Request = r.uint32()
		t.Index = r.uint32()
		prev += r.int()
		t.TS = prev
		t.Tokens = r.uint32()
	}
	if err := r.done(); err != nil {
		b.Tokens = b.Tokens[:0]
		return fmt.Errorf("decoding token batch: %w", err)
	}
	return nil
}

func (b *TokenBatch) Validate(minTS, maxTS int64) error {
	if b.RunID == "" {
		return invalid("empty run id")
	}
	for i, id := range b.RequestIDs {
		if id == "" {
			return invalid("request id %d is empty", i)
		}
	}
	for i, t := range b.Tokens {
		if int(t.Request) >= len(b.RequestIDs) {
			return invalid("token %d references request %d of %d", i, t.Request, len(b.RequestIDs))
		}
		if err := checkTS("token", t.TS, minTS, maxTS); err != nil {
			return err
		}
	}
	return nil
}

// --- run

func (*RunEvent) Kind() Kind { return KindRun }

func (e *RunEvent) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindRun)
	dst = appendString(dst, e.RunID)
	dst = appendString(dst, e.Experiment)
	dst = appendUint(dst, uint64(e.Cycle))
	dst = append(dst, byte(e.Phase))
	dst = appendInt(dst, e.TS)
	dst = appendString(dst, e.Backend)
	dst = appendString(dst, e.Model)
	dst = appendString(dst, e.Host)
	dst = appendUint(dst, uint64(len(e.Devices)))
	for _, d := range e.Devices {
		dst = appendString(dst, d)
	}
	dst = appendString(dst, e.Config)
	return appendString(dst, e.Inventory)
}

func (e *RunEvent) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindRun)
	if err != nil {
		return err
	}
	e.RunID = r.string(MaxShortString)
	e.Experiment = r.string(MaxShortString)
	e.Cycle = r.uint32()
	e.Phase = RunPhase(r.uint8())
	e.TS = r.int()
	e.Backend = r.string(MaxShortString)
	e.Model = r.string(MaxShortString)
	e.Host = r.string(MaxShortString)
	n := r.count(1)
	e.Devices = grow(e.Devices, n)
	for i := range e.Devices {
		e.Devices[i] = r.string(MaxShortString)
	}
	e.Config = r.string(MaxLongString)
	e.Inventory = r.string(MaxLongString)
	if err := r.done(); err != nil {
		return fmt.Errorf("decoding run event: %w", err)
	}
	return nil
}

func (e *RunEvent) Validate(minTS, maxTS int64) error {
	if e.RunID == "" {
		return invalid("empty run id")
	}
	if e.Phase > RunBaseline {
		return invalid("run %s: unknown phase %d", e.RunID, e.Phase)
	}
	return checkTS("run event", e.TS, minTS, maxTS)
}

// Compile-time checks that every batch is an Event.
var (
	_ Event = (*PowerBatch)(nil)
	_ Event = (*EnergyBatch)(nil)
	_ Event = (*StateBatch)(nil)
	_ Event = (*GapBatch)(nil)
	_ Event = (*PlatformEvent)(nil)
	_ Event = (*ClockBatch)(nil)
	_ Event = (*MetricBatch)(nil)
	_ Event = (*RequestBatch)(nil)
	_ Event = (*TokenBatch)(nil)
	_ Event = (*RunEvent)(nil)
)

// --- platform

func (*PlatformEvent) Kind() Kind { return KindPlatform }

func (e *PlatformEvent) AppendWire(dst []byte) []byte {
	dst = appendHeader(dst, KindPlatform)
	dst = appendInt(dst, e.TS)
	dst = appendString(dst, e.Type)
	dst = appendString(dst, e.Subject)
	dst = appendString(dst, e.Actor)
	return appendString(dst, e.Payload)
}

func (e *PlatformEvent) DecodeWire(buf []byte) error {
	r, err := newReader(buf, KindPlatform)
	if err != nil {
		return err
	}
	e.TS = r.int()
	e.Type = r.string(MaxShortString)
	e.Subject = r.string(MaxShortString)
	e.Actor = r.string(MaxShortString)
	e.Payload = r.string(MaxLongString)
	if err := r.done(); err != nil {
		return fmt.Errorf("decoding platform event: %w", err)
	}
	return nil
}

func (e *PlatformEvent) Validate(minTS, maxTS int64) error {
	if e.Type == "" {
		return invalid("platform event without a type")
	}
	return checkTS("platform", e.TS, minTS, maxTS)
}
