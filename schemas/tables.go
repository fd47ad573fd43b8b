package schemas

// Table names.
const (
	TablePower   = "power_samples"
	TableEnergy  = "energy_readings"
	TableState   = "device_state"
	TableGap     = "gaps"
	TableRequest = "requests"
	TableToken   = "tokens"
	TableRun     = "runs"
	TableDevice  = "devices"
	TableClock   = "clock_offsets"
	TableMetric  = "server_metrics"
	// TablePlatform holds the results platform's history (kind platform).
	TablePlatform = "platform_events"
)

// Position locates the message that carried a row: the stream's epoch
// (its creation time, distinguishing a recreated stream whose sequences
// restart at 1) and the stream sequence. Ingest resumes after the highest
// stored sequence of the current epoch.
type Position struct {
	Epoch int64
	Seq   uint64
}

type posCols struct {
	Epoch *Col[int64]
	Seq   *Col[uint64]
}

func newPosCols() posCols {
	return posCols{Epoch: newCol[int64]("stream_epoch", "Int64"), Seq: newCol[uint64]("stream_seq", "UInt64")}
}

func (p posCols) append(pos Position) {
	p.Epoch.Append(pos.Epoch)
	p.Seq.Append(pos.Seq)
}

// PowerRows builds power_samples.
type PowerRows struct {
	t     Table
	dev   deviceCols
	TS    *Col[int64]
	Power *Col[int64]
	Pos   posCols
}

func newPowerRows() *PowerRows {
	r := &PowerRows{dev: newDeviceCols(), TS: newCol[int64]("ts_ns", "Int64"), Power: newCol[int64]("power_mw", "Int64"), Pos: newPosCols()}
	r.t = Table{Name: TablePower, Columns: append(r.dev.list(), r.TS, r.Power, r.Pos.Epoch, r.Pos.Seq)}
	return r
}

func (r *PowerRows) Table() *Table { return &r.t }

func (r *PowerRows) Append(ev Event, pos Position) {
	b := ev.(*PowerBatch)
	for _, s := range b.Samples {
		r.dev.append(&b.Origin, &b.Device)
		r.TS.Append(s.TS)
		r.Power.Append(int64(s.Power))
		r.Pos.append(pos)
	}
}

// EnergyRows builds energy_readings.
type EnergyRows struct {
	t                 Table
	dev               deviceCols
	TSBefore, TSAfter *Col[int64]
	Energy            *Col[int64]
	Reset             *Col[uint8]
	Pos               posCols
}

func newEnergyRows() *EnergyRows {
	r := &EnergyRows{dev: newDeviceCols(),
		TSBefore: newCol[int64]("ts_before_ns", "Int64"), TSAfter: newCol[int64]("ts_after_ns", "Int64"),
		Energy: newCol[int64]("energy_uj", "Int64"), Reset: newCol[uint8]("reset", "UInt8"), Pos: newPosCols()}
	r.t = Table{Name: TableEnergy, Columns: append(r.dev.list(), r.TSBefore, r.TSAfter, r.Energy, r.Reset, r.Pos.Epoch, r.Pos.Seq)}
	return r
}

func (r *EnergyRows) Table() *Table { return &r.t }

func (r *EnergyRows) Append(ev Event, pos Position) {
	b := ev.(*EnergyBatch)
	for _, e := range b.Readings {
		r.dev.append(&b.Origin, &b.Device)
		r.TSBefore.Append(e.TSBefore)
		r.TSAfter.Append(e.TSAfter)
		r.Energy.Append(int64(e.Energy))
		var reset uint8
		if e.Reset {
			reset = 1
		}
		r.Reset.Append(reset)
		r.Pos.append(pos)
	}
}

// StateRows builds device_state.
type StateRows struct {
	t                                   Table
	dev                                 deviceCols
	TS                                  *Col[int64]
	SMClock, MemClock, UtilGPU, UtilMem *Col[uint32]
	Temperature, PState                 *Col[int32]
	MemUsed, Throttle                   *Col[uint64]
	PowerLimit                          *Col[int64]
	Pos                                 posCols
}

func newStateRows() *StateRows {
	r := &StateRows{dev: newDeviceCols(),
		TS:          newCol[int64]("ts_ns", "Int64"),
		SMClock:     newCol[uint32]("sm_clock_mhz", "UInt32"),
		MemClock:    newCol[uint32]("mem_clock_mhz", "UInt32"),
		Temperature: newCol[int32]("temperature_c", "Int32"),
		UtilGPU:     newCol[uint32]("util_gpu_pct", "UInt32"),
		UtilMem:     newCol[uint32]("util_mem_pct", "UInt32"),
		MemUsed:     newCol[uint64]("mem_used_bytes", "UInt64"),
		Throttle:    newCol[uint64]("throttle_reasons", "UInt64"),
		PowerLimit:  newCol[int64]("power_limit_mw", "Int64"),
		PState:      newCol[int32]("pstate", "Int32"),
		Pos:         newPosCols()}
	r.t = Table{Name: TableState, Columns: append(r.dev.list(), r.TS, r.SMClock, r.MemClock, r.Temperature,
		r.UtilGPU, r.UtilMem, r.MemUsed, r.Throttle, r.PowerLimit, r.PState, r.Pos.Epoch, r.Pos.Seq)}
	return r
}

func (r *StateRows) Table() *Table { return &r.t }

func (r *StateRows) Append(ev Event, pos Position) {
	b := ev.(*StateBatch)
	for _, s := range b.Samples {
		r.dev.append(&b.Origin, &b.Device)
		r.TS.Append(s.TS)
		r.SMClock.Append(s.SMClock)
		r.MemClock.Append(s.MemClock)
		r.Temperature.Append(s.Temperature)
		r.UtilGPU.Append(s.UtilGPU)
		r.UtilMem.Append(s.UtilMem)
		r.MemUsed.Append(s.MemUsed)
		r.Throttle.Append(s.ThrottleReasons)
		r.PowerLimit.Append(int64(s.PowerLimit))
		r.PState.Append(s.PState)
		r.Pos.append(pos)
	}
}

// GapRows builds gaps.
type GapRows struct {
	t        Table
	dev      deviceCols
	From, To *Col[int64]
	Reason   *Col[string]
	Pos      posCols
}

func newGapRows() *GapRows {
	r := &GapRows{dev: newDeviceCols(), From: newCol[int64]("from_ns", "Int64"), To: newCol[int64]("to_ns", "Int64"),
		Reason: newCol[string]("reason", "String"), Pos: newPosCols()}
	r.t = Table{Name: TableGap, Columns: append(r.dev.list(), r.From, r.To, r.Reason, r.Pos.Epoch, r.Pos.Seq)}
	return r
}

func (r *GapRows) Table() *Table { return &r.t }

func (r *GapRows) Append(ev Event, pos Position) {
	b := ev.(*GapBatch)
	for _, g := range b.Gaps {
		r.dev.append(&b.Origin, &b.Device)
		r.From.Append(g.From)
		r.To.Append(g.To)
		r.Reason.Append(g.Reason)
		r.Pos.append(pos)
	}
}

// ClockRows builds clock_offsets.
type ClockRows struct {
	t                              Table
	dev                            deviceCols
	TS, Offset, Low, High, Applied *Col[int64]
	Reads                          *Col[uint32]
	Pos                            posCols
}

func newClockRows() *ClockRows {
	r := &ClockRows{dev: newDeviceCols(), TS: newCol[int64]("ts_ns", "Int64"), Offset: newCol[int64]("offset_dur_ns", "Int64"),
		Low: newCol[int64]("low_dur_ns", "Int64"), High: newCol[int64]("high_dur_ns", "Int64"), Applied: newCol[int64]("applied_dur_ns", "Int64"),
		Reads: newCol[uint32]("reads", "UInt32"), Pos: newPosCols()}
	r.t = Table{Name: TableClock, Columns: append(r.dev.list(), r.TS, r.Offset, r.Low, r.High, r.Applied, r.Reads, r.Pos.Epoch, r.Pos.Seq)}
	return r
}

func (r *ClockRows) Table() *Table { return &r.t }

func (r *ClockRows) Append(ev Event, pos Position) {
	b := ev.(*ClockBatch)
	for _, c := range b.Samples {
		r.dev.append(&b.Origin, &b.Device)
		r.TS.Append(c.TS)
		r.Offset.Append(c.Offset)
		r.Low.Append(c.Low)
		r.High.Append(c.High)
		r.Applied.Append(c.Applied)
		r.Reads.Append(c.Reads)
		r.Pos.append(pos)
	}
}

// MetricRows builds server_metrics.
type MetricRows struct {
	t                            Table
	RunID, Endpoint, Name, Label *Col[string]
	TS                           *Col[int64]
	Value                        *Col[float64]
	Pos                          posCols
}

func newMetricRows() *MetricRows {
	r := &MetricRows{RunID: newCol[string]("run_id", "String"), Endpoint: newCol[string]("endpoint", "String"),
		TS: newCol[int64]("ts_ns", "Int64"), Name: newCol[string]("name", "String"), Label: newCol[string]("labels", "String"),
		Value: newCol[float64]("value", "Float64"), Pos: newPosCols()}
	r.t = Table{Name: TableMetric, Columns: []Column{r.RunID, r.Endpoint, r.TS, r.Name, r.Label, r.Value, r.Pos.Epoch, r.Pos.Seq}}
	return r
}

func (r *MetricRows) Table() *Table { return &r.t }

func (r *MetricRows) Append(ev Event, pos Position) {
	b := ev.(*MetricBatch)
	for _, m := range b.Samples {
		r.RunID.Append(b.RunID)
		r.Endpoint.Append(b.Endpoint)
		r.TS.Append(m.TS)
		r.Name.Append(m.Name)
		r.Label.Append(m.Labels)
		r.Value.Append(m.Value)
		r.Pos.append(pos)
	}
}

// RequestRows builds requests.
type RequestRows struct {
	t                                            Table
	RunID, ID                                    *Col[string]
	Cycle                                        *Col[uint32]
	Scheduled, Sent, FirstToken, LastToken, Done *Col[int64]
	PromptTokens, OutputTokens                   *Col[uint32]
	Status                                       *Col[string]
	Error                                        *Col[string]
	ServerQueue, ServerPrefill, ServerDecode     *Col[int64]
	KernelStamped                                *Col[uint32]
	SentKernel                                   *Col[uint8]
	Pos                                          posCols
}

func newRequestRows() *RequestRows {
	r := &RequestRows{
		RunID: newCol[string]("run_id", "String"), ID: newCol[string]("request_id", "String"),
		Cycle:     newCol[uint32]("cycle", "UInt32"),
		Scheduled: newCol[int64]("scheduled_ns", "Int64"), Sent: newCol[int64]("sent_ns", "Int64"),
		FirstToken: newCol[int64]("first_token_ns", "Int64"), LastToken: newCol[int64]("last_token_ns", "Int64"),
		Done:         newCol[int64]("done_ns", "Int64"),
		PromptTokens: newCol[uint32]("prompt_tokens", "UInt32"), OutputTokens: newCol[uint32]("output_tokens", "UInt32"),
		Status: newCol[string]("status", "String"), Error: newCol[string]("error", "String"),
		ServerQueue: newCol[int64]("server_queue_dur_ns", "Int64"), ServerPrefill: newCol[int64]("server_prefill_dur_ns", "Int64"),
		ServerDecode: newCol[int64]("server_decode_dur_ns", "Int64"), KernelStamped: newCol[uint32]("kernel_stamped", "UInt32"),
		SentKernel: newCol[uint8]("sent_kernel", "UInt8"), Pos: newPosCols()}
	r.t = Table{Name: TableRequest, Columns: []Column{r.RunID, r.ID, r.Cycle, r.Scheduled, r.Sent, r.FirstToken,
		r.LastToken, r.Done, r.PromptTokens, r.OutputTokens, r.Status, r.Error, r.ServerQueue, r.ServerPrefill, r.ServerDecode,
		r.KernelStamped, r.SentKernel, r.Pos.Epoch, r.Pos.Seq}}
	return r
}

func (r *RequestRows) Table() *Table { return &r.t }

func (r *RequestRows) Append(ev Event, pos Position) {
	b := ev.(*RequestBatch)
	for i := range b.Requests {
		q := &b.Requests[i]
		r.RunID.Append(b.RunID)
		r.ID.Append(q.ID)
		r.Cycle.Append(q.Cycle)
		r.Scheduled.Append(q.Scheduled)
		r.Sent.Append(q.Sent)
		r.FirstToken.Append(q.FirstToken)
		r.LastToken.Append(q.LastToken)
		r.Done.Append(q.Done)
		r.PromptTokens.Append(q.PromptTokens)
		r.OutputTokens.Append(q.OutputTokens)
		r.Status.Append(q.Status.String())
		r.Error.Append(q.Error)
		r.ServerQueue.Append(q.ServerQueue)
		r.ServerPrefill.Append(q.ServerPrefill)
		r.ServerDecode.Append(q.ServerDecode)
		r.KernelStamped.Append(q.KernelStamped)
		sent := uint8(0)
		if q.SentKernel {
			sent = 1
		}
		r.SentKernel.Append(sent)
		r.Pos.append(pos)
	}
}

// TokenRows builds tokens.
type TokenRows struct {
	t              Table
	RunID, Request *Col[string]
	Index, Tokens  *Col[uint32]
	TS             *Col[int64]
	Pos            posCols
}

func newTokenRows() *TokenRows {
	r := &TokenRows{RunID: newCol[string]("run_id", "String"), Request: newCol[string]("request_id", "String"),
		Index: newCol[uint32]("token_index", "UInt32"), TS: newCol[int64]("ts_ns", "Int64"),
		Tokens: newCol[uint32]("tokens", "UInt32"), Pos: newPosCols()}
	r.t = Table{Name: TableToken, Columns: []Column{r.RunID, r.Request, r.Index, r.TS, r.Tokens, r.Pos.Epoch, r.Pos.Seq}}
	return r
}

func (r *TokenRows) Table() *Table { return &r.t }

func (r *TokenRows) Append(ev Event, pos Position) {
	b := ev.(*TokenBatch)
	for _, t := range b.Tokens {
		r.RunID.Append(b.RunID)
		r.Request.Append(b.RequestIDs[t.Request])
		r.Index.Append(t.Index)
		r.TS.Append(t.TS)
		r.Tokens.Append(t.Tokens)
		r.Pos.append(pos)
	}
}

// RunRows builds runs.
type RunRows struct {
	t                                              Table
	RunID, Experiment, Phase, Backend, Model, Host *Col[string]
	Cycle                                          *Col[uint32]
	TS                                             *Col[int64]
	Devices                                        *Col[[]string]
	Config, Inventory                              *Col[string]
	Pos                                            posCols
}

func newRunRows() *RunRows {
	r := &RunRows{RunID: newCol[string]("run_id", "String"), Experiment: newCol[string]("experiment", "String"),
		Cycle: newCol[uint32]("cycle", "UInt32"), Phase: newCol[string]("phase", "String"),
		TS: newCol[int64]("ts_ns", "Int64"), Backend: newCol[string]("backend", "String"),
		Model: newCol[string]("model", "String"), Host: newCol[string]("host", "String"),
		Devices: newCol[[]string]("devices", "Array(String)"),
		Config:  newCol[string]("config", "String"), Inventory: newCol[string]("inventory", "String"), Pos: newPosCols()}
	r.t = Table{Name: TableRun, Columns: []Column{r.RunID, r.Experiment, r.Cycle, r.Phase, r.TS, r.Backend,
		r.Model, r.Host, r.Devices, r.Config, r.Inventory, r.Pos.Epoch, r.Pos.Seq}}
	return r
}

func (r *RunRows) Table() *Table { return &r.t }

func (r *RunRows) Append(ev Event, pos Position) {
	e := ev.(*RunEvent)
	r.RunID.Append(e.RunID)
	r.Experiment.Append(e.Experiment)
	r.Cycle.Append(e.Cycle)
	r.Phase.Append(e.Phase.String())
	r.TS.Append(e.TS)
	r.Backend.Append(e.Backend)
	r.Model.Append(e.Model)
	r.Host.Append(e.Host)
	r.Devices.Append(append([]string(nil), e.Devices...))
	r.Config.Append(e.Config)
	r.Inventory.Append(e.Inventory)
	r.Pos.append(pos)
}

// PlatformRows builds platform_events.
type PlatformRows struct {
	t                             Table
	TS                            *Col[int64]
	Type, Subject, Actor, Payload *Col[string]
	Pos                           posCols
}

func newPlatformRows() *PlatformRows {
	r := &PlatformRows{TS: newCol[int64]("ts_ns", "Int64"), Type: newCol[string]("type", "String"),
		Subject: newCol[string]("subject", "String"), Actor: newCol[string]("actor", "String"),
		Payload: newCol[string]("payload", "String"), Pos: newPosCols()}
	r.t = Table{Name: TablePlatform, Columns: []Column{r.TS, r.Type, r.Subject, r.Actor, r.Payload, r.Pos.Epoch, r.Pos.Seq}}
	return r
}

func (r *PlatformRows) Table() *Table { return &r.t }

func (r *PlatformRows) Append(ev Event, pos Position) {
	e := ev.(*PlatformEvent)
	r.TS.Append(e.TS)
	r.Type.Append(e.Type)
	r.Subject.Append(e.Subject)
	r.Actor.Append(e.Actor)
	r.Payload.Append(e.Payload)
	r.Pos.append(pos)
}

// DeviceRows builds devices: one row per device identity seen by ingest
// (a ReplacingMergeTree keeps the latest).
type DeviceRows struct {
	t                                   Table
	Host, UUID, Name, MIGParent, Source *Col[string]
	Index                               *Col[uint32]
	Seen                                *Col[int64]
}

// NewDeviceRows returns an empty devices block.
func NewDeviceRows() *DeviceRows {
	r := &DeviceRows{Host: newCol[string]("host", "String"), Index: newCol[uint32]("device_index", "UInt32"),
		UUID: newCol[string]("device_uuid", "String"), Name: newCol[string]("device_name", "String"),
		MIGParent: newCol[string]("mig_parent_uuid", "String"), Source: newCol[string]("source", "String"),
		Seen: newCol[int64]("seen_ns", "Int64")}
	r.t = Table{Name: TableDevice, Columns: []Column{r.Host, r.Index, r.UUID, r.Name, r.MIGParent, r.Source, r.Seen}}
	return r
}

func (r *DeviceRows) Table() *Table { return &r.t }

// Add records one device identity seen at ts.
func (r *DeviceRows) Add(o *Origin, d *Device, ts int64) {
	r.Host.Append(o.Host)
	r.Index.Append(d.Index)
	r.UUID.Append(d.UUID)
	r.Name.Append(d.Name)
	r.MIGParent.Append(d.MIGParent)
	r.Source.Append(o.Source)
	r.Seen.Append(ts)
}
