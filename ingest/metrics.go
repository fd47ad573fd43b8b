package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are ingest's self-metrics, exposed on /metrics.
type Metrics struct {
	MessagesIn    *prometheus.CounterVec
	RowsWritten   *prometheus.CounterVec
	Skipped       *prometheus.CounterVec
	Resyncs       *prometheus.CounterVec
	DeadLettered  *prometheus.CounterVec
	ConsumerLag   *prometheus.GaugeVec
	InsertSeconds *prometheus.HistogramVec
	InsertErrors  *prometheus.CounterVec
	Watermark     *prometheus.GaugeVec
	Leases        prometheus.Gauge
	EndToEnd      *prometheus.HistogramVec
}

// EndToEndBuckets are the bucket bounds (seconds) of EndToEnd.
var EndToEndBuckets = []float64{0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1,
	1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2, 2.5, 3, 4, 5, 7.5, 10, 20, 30, 60, 120, 300}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		MessagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lem_ingest_messages_total", Help: "Messages received from JetStream, by event kind.",
		}, []string{"kind"}),
		RowsWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lem_ingest_rows_written_total", Help: "Rows written to the store, by table.",
		}, []string{"table"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lem_ingest_redelivered_skipped_total", Help: "Messages skipped because their rows were already stored.",
		}, []string{"kind"}),
		Resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lem_ingest_resyncs_total", Help: "Consumers recreated from the stored watermark after deliveries came out of order (a JetStream node failed over), by kind.",
		}, []string{"kind"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lem_ingest_dead_lettered_total", Help: "Messages sent to the dead-letter stream, by kind and reason class.",
		}, []string{"kind", "reason"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lem_ingest_consumer_lag_messages", Help: "Messages in the stream not yet delivered to the consumer.",
		}, []string{"kind"}),
		InsertSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lem_ingest_insert_duration_seconds", Help: "Time to write one batch to the store.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"table"}),
		InsertErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lem_ingest_insert_errors_total", Help: "Failed writes to the store (each is retried).",
		}, []string{"table"}),
		Leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lem_ingest_leases_held", Help: "Event kinds this process ingests under shared ingest (-shared), by lease.",
		}),
		Watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lem_ingest_watermark_sequence", Help: "Highest stream sequence stored, by table.",
		}, []string{"table"}),
		EndToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lem_ingest_end_to_end_seconds",
			Help:    "Time from a message's arrival in JetStream to its rows being stored, by event kind.",
			Buckets: EndToEndBuckets,
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.MessagesIn, m.RowsWritten, m.Skipped, m.Resyncs, m.DeadLettered, m.ConsumerLag,
			m.InsertSeconds, m.InsertErrors, m.Watermark, m.Leases, m.EndToEnd)
	}
	return m
}
