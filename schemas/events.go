package schemas

// The event types. Struct tags `doc` and `unit` feed docs/events.md, which
// the binary generates (lem docs events) and a test checks for drift.

// Device identifies one measured device on a host.
type Device struct {
	Index     uint32 `doc:"device index on its host (NVML index, RAPL package number)"`
	UUID      string `doc:"stable identity (GPU UUID, MIG instance UUID, or rapl:<package>)"`
	Name      string `doc:"product name as reported by the driver"`
	MIGParent string `doc:"UUID of the physical GPU when this device is a MIG instance, else empty"`
}

// Header fields shared by device-scoped batches.
type Origin struct {
	Host   string `doc:"host name of the collector"`
	Source string `doc:"collector and sensor, e.g. nvml.buffer, nvml.instant, nvml.counter, nvml.counter.aligned, rapl, sim; sim is never a measurement; a suffix .apportioned marks a MIG instance's share of its board"`
}

// PowerSample is one power reading.
type PowerSample struct {
	TS    int64 `doc:"sample time on the host clock" unit:"ns since Unix epoch"`
	Power Power `doc:"power drawn" unit:"mW"`
}

// PowerBatch carries 100 ms to 1 s of one device's power samples.
type PowerBatch struct {
	Origin
	Device  Device
	Samples []PowerSample
}

// EnergyReading is one read of a cumulative energy counter. Plain reads
// (source nvml.counter) are stamped before and after the call; reads
// aligned to the counter's refresh (nvml.counter.aligned) are stamped with
// a bracket of the refresh instant their value refers to.
type EnergyReading struct {
	TSBefore int64  `doc:"host time just before the read; aligned sources: earliest instant the value can refer to" unit:"ns since Unix epoch"`
	TSAfter  int64  `doc:"host time just after the read; aligned sources: latest instant the value can refer to" unit:"ns since Unix epoch"`
	Energy   Energy `doc:"counter value (cumulative since driver load or counter start)" unit:"µJ"`
	Reset    bool   `doc:"the counter went backwards since the previous reading (driver reload or wrap): deltas across it are invalid"`
}

// CounterReading is an energy-counter reading as stored, with the label
// of the source that took it (nvml.counter, nvml.counter.aligned, rapl...).
type CounterReading struct {
	EnergyReading
	Source string
}

// EnergyBatch carries energy-counter readings of one device.
type EnergyBatch struct {
	Origin
	Device   Device
	Readings []EnergyReading
}

// StateSample is one snapshot of a device's operating state.
type StateSample struct {
	TS              int64  `doc:"sample time on the host clock" unit:"ns since Unix epoch"`
	SMClock         uint32 `doc:"SM (graphics) clock" unit:"MHz"`
	MemClock        uint32 `doc:"memory clock" unit:"MHz"`
	Temperature     int32  `doc:"GPU temperature" unit:"°C"`
	UtilGPU         uint32 `doc:"GPU utilisation over the driver's last sample period" unit:"%"`
	UtilMem         uint32 `doc:"memory-controller utilisation" unit:"%"`
	MemUsed         uint64 `doc:"device memory in use" unit:"bytes"`
	ThrottleReasons uint64 `doc:"NVML clocks-event (throttle) reason bit mask"`
	PowerLimit      Power  `doc:"enforced power limit" unit:"mW"`
	PState          int32  `doc:"performance state (0 = P0); -1 when unknown"`
}

// StateBatch carries device state samples of one device.
type StateBatch struct {
	Origin
	Device  Device
	Samples []StateSample
}

// Gap reports a span in which a collector lost samples it should have had.
type Gap struct {
	From   int64  `doc:"first instant without samples" unit:"ns since Unix epoch"`
	To     int64  `doc:"end of the gap" unit:"ns since Unix epoch"`
	Reason string `doc:"why: buffer overrun, call failed, ..."`
}

// GapBatch carries collection gaps of one device.
type GapBatch struct {
	Origin
	Device Device
	Gaps   []Gap
}

// ClockSample is one estimate of the offset between a sensor's own clock
// (the NVML driver's microsecond sample stamps) and the host clock, bounded
// from both sides by the reads in the estimation window: a sample returned
// by a call existed before the call returned, and a sample not yet returned
// did not exist when the call began.
type ClockSample struct {
	TS      int64  `doc:"host time of the estimate (end of its window)" unit:"ns since Unix epoch"`
	Offset  int64  `doc:"best estimate of host − sensor clock (midpoint of the bounds)" unit:"ns"`
	Low     int64  `doc:"lower bound of host − sensor clock" unit:"ns"`
	High    int64  `doc:"upper bound of host − sensor clock" unit:"ns"`
	Applied int64  `doc:"offset added to the sensor's stamps in the published samples; 0 when the bounds contain 0" unit:"ns"`
	Reads   uint32 `doc:"reads that bounded the estimate"`
}

// ClockBatch carries clock-offset estimates of one device's sensor.
type ClockBatch struct {
	Origin
	Device  Device
	Samples []ClockSample
}

// RequestStatus is how a request ended.
type RequestStatus uint8

// Request outcomes.
const (
	StatusOK        RequestStatus = 0
	StatusError     RequestStatus = 1
	StatusTimeout   RequestStatus = 2
	StatusCancelled RequestStatus = 3
)

var statusNames = [...]string{"ok", "error", "timeout", "cancelled"}

func (s RequestStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// ParseRequestStatus is the inverse of RequestStatus.String; an unknown
// name reads as StatusError.
func ParseRequestStatus(s string) RequestStatus {
	for i, n := range statusNames {
		if n == s {
			return RequestStatus(i)
		}
	}
	return StatusError
}

// Request is the lifecycle of one inference request, as seen by the load
// generator. Zero times mean "did not happen" (no token ever arrived).
type Request struct {
	ID           string        `doc:"request id, unique within its run"`
	Cycle        uint32        `doc:"cycle of the run this request belongs to"`
	Scheduled    int64         `doc:"time the arrival process scheduled the request" unit:"ns since Unix epoch"`
	Sent         int64         `doc:"time the request left: the kernel's transmit time of its last byte where SentKernel, else when the client handed it to its HTTP transport" unit:"ns since Unix epoch"`
	FirstToken   int64         `doc:"arrival of the first chunk carrying a token (not the role-only chunk)" unit:"ns since Unix epoch"`
	LastToken    int64         `doc:"arrival of the last chunk carrying a token" unit:"ns since Unix epoch"`
	Done         int64         `doc:"end of the response stream" unit:"ns since Unix epoch"`
	PromptTokens uint32        `doc:"prompt tokens, from the server's usage report"`
	OutputTokens uint32        `doc:"completion tokens, from the server's usage report"`
	Status       RequestStatus `doc:"ok, error, timeout or cancelled"`
	Error        string        `doc:"error text when Status is not ok"`
	// The server's own view, where its responses report it (llama.cpp's
	// timings, TGI's headers, ...): cross-checks the client's stamps.
	ServerQueue   int64 `doc:"time the server reports the request waited before processing; 0 when not reported" unit:"ns"`
	ServerPrefill int64 `doc:"server-reported prompt processing (prefill) time; 0 when not reported" unit:"ns"`
	ServerDecode  int64 `doc:"server-reported generation (decode) time; 0 when not reported" unit:"ns"`
	// KernelStamped says which stamps the request's chunks carry: this
	// many were stamped with the kernel's receive time of the segment that
	// carried them (SO_TIMESTAMPNS), the rest when the client read them.
	KernelStamped uint32 `doc:"chunks stamped with the kernel's receive time of their own segment (the others: an upper bound, or when the client read them)"`
	// SentKernel says where Sent comes from: the kernel's transmit time of
	// the request's last byte (SO_TIMESTAMPING), or, false, the client's
	// clock when it handed the request to its HTTP transport.
	SentKernel bool `doc:"Sent is the kernel's transmit time of the request's last byte (false: when the client handed it to its HTTP transport)"`
}

// RequestBatch carries finished requests of one run.
type RequestBatch struct {
	RunID    string `doc:"run the requests belong to"`
	Requests []Request
}

// Token is the arrival of one streamed chunk of a response.
type Token struct {
	Request uint32 `doc:"index into the batch's RequestIDs"`
	Index   uint32 `doc:"position of the chunk's first token in the response (0-based)"`
	TS      int64  `doc:"time the chunk was read, before parsing, on the monotonic clock anchored to wall time" unit:"ns since Unix epoch"`
	Tokens  uint32 `doc:"tokens carried by the chunk"`
}

// TokenBatch carries chunk arrivals of one run. Request ids are stored once
// per batch and referenced by index.
type TokenBatch struct {
	RunID      string   `doc:"run the tokens belong to"`
	RequestIDs []string `doc:"request ids referenced by Tokens[].Request"`
	Tokens     []Token
}

// MetricSample is one sample of one series scraped from an inference
// server's Prometheus endpoint.
type MetricSample struct {
	TS     int64   `doc:"scrape time on the host clock" unit:"ns since Unix epoch"`
	Name   string  `doc:"metric name as exposed (histograms and summaries as _bucket/_sum/_count series)"`
	Labels string  `doc:"labels, canonical: sorted name=\"value\" pairs joined by commas"`
	Value  float64 `doc:"sample value, in the metric's own unit"`
}

// MetricBatch carries server metric samples scraped during one run.
type MetricBatch struct {
	RunID    string `doc:"run the scrape belongs to"`
	Endpoint string `doc:"URL scraped"`
	Samples  []MetricSample
}

// RunPhase says which edge of a run cycle a RunEvent marks.
type RunPhase uint8

// Run phases.
const (
	RunStart RunPhase = 0
	RunEnd   RunPhase = 1
	// RunBaseline marks the end of the idle-baseline window that precedes
	// the first cycle; TS of the matching RunStart is its beginning.
	RunBaseline RunPhase = 2
)

var phaseNames = [...]string{"start", "end", "baseline"}

func (p RunPhase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "unknown"
}

// ParseRunPhase is the inverse of RunPhase.String; an unknown name reads as
// 255, which no analysis accepts.
func ParseRunPhase(s string) RunPhase {
	for i, n := range phaseNames {
		if n == s {
			return RunPhase(i)
		}
	}
	return 255
}

// PlatformEvent is one change of the results platform's state (lem web),
// published on lem.v1.platform.<type>.
type PlatformEvent struct {
	TS      int64  `doc:"time of the change on the platform's clock" unit:"ns since Unix epoch"`
	Type    string `doc:"what changed: run.published, upload.verified, upload.refused, token.created, token.revoked, user.created, session.started"`
	Subject string `doc:"what it changed: a run id, a token's SHA-256, a user id"`
	Actor   string `doc:"who changed it: a user id, or empty for the platform itself"`
	Payload string `doc:"the new state, JSON (never a secret: tokens and sessions by their SHA-256)"`
}

// RunEvent marks the start or end of one cycle of a run.
type RunEvent struct {
	RunID      string   `doc:"run id (unique)"`
	Experiment string   `doc:"experiment name"`
	Cycle      uint32   `doc:"cycle number, from 0"`
	Phase      RunPhase `doc:"start, end or baseline"`
	TS         int64    `doc:"time of the edge" unit:"ns since Unix epoch"`
	Backend    string   `doc:"inference backend (vllm, tensorrt-llm, sglang, tgi, llama.cpp, pytorch, synthetic)"`
	Model      string   `doc:"model name as served"`
	Host       string   `doc:"host of the load generator"`
	Devices    []string `doc:"UUIDs of the devices the run used; analytics counts exactly these"`
	Config     string   `doc:"normalised run configuration, canonical JSON"`
	Inventory  string   `doc:"hardware and software inventory, canonical JSON"`
}
