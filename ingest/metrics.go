package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are ingest's self-metrics, exposed on /metrics.
type Metrics struct {
	MessagesIn    *prometheus.CounterVec
	RowsWritten   *prometheus.CounterVec
	Skipped       *prometheus.CounterVec
	DeadLettered  *prometheus.CounterVec
	ConsumerLag   *prometheus.GaugeVec
	InsertSeconds *prometheus.HistogramVec
	InsertErrors  *prometheus.CounterVec
	Watermark     *prometheus.GaugeVec
}

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
		Watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lem_ingest_watermark_sequence", Help: "Highest stream sequence stored, by table.",
		}, []string{"table"}),
	}
	if reg != nil {
		reg.MustRegister(m.MessagesIn, m.RowsWritten, m.Skipped, m.DeadLettered, m.ConsumerLag,
			m.InsertSeconds, m.InsertErrors, m.Watermark)
	}
	return m
}
