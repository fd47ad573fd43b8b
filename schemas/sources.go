package schemas

// Source labels (Origin.Source): which collector and sensor produced an
// event. Analytics ranks and interprets series by them; they are stored in
// every row.
const (
	// SourceNVMLCounter is the energy counter read whenever the
	// collector's timer fires (value 0–100 ms old).
	SourceNVMLCounter = "nvml.counter"
	// SourceNVMLCounterAligned is the counter read at its refresh, stamped
	// with the bracket of the change.
	SourceNVMLCounterAligned = "nvml.counter.aligned"
	// SourceNVMLBuffer is the driver's ~20 ms power buffer.
	SourceNVMLBuffer = "nvml.buffer"
	// SourceNVMLInstant is instant power (field 186).
	SourceNVMLInstant = "nvml.instant"
	SourceNVMLState   = "nvml.state"
	// SourceSim is the simulated GPU: never a measurement.
	SourceSim = "sim"
	// SourceRAPL is CPU/DRAM energy from Linux powercap.
	SourceRAPL = "rapl"
	// ApportionedSuffix marks a MIG instance's share of its board's power
	// and energy (e.g. nvml.buffer.apportioned): NVML measures boards only.
	ApportionedSuffix = ".apportioned"
)
