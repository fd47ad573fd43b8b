// Package ingest moves events from JetStream into a store: ClickHouse when
// one is configured, else Parquet files on local disk.
//
// One durable pull consumer per event kind feeds columnar batches (explicit
// column lists, Column(i).Append). A batch is written once it holds enough
// rows or once a flush interval passes, and only then is the last message
// acknowledged (AckAll). Every row carries the stream sequence of its
// message; on start a worker reads max(stream_seq) from its table and skips
// what was already written, so redelivery and restarts never duplicate rows
// (exactly-once effect). Messages that cannot be decoded or fail validation
// go to the dead-letter stream with the reason in headers and never block
// the stream. Store failures are retried with backoff, holding the batch.
package ingest
