// Package schemas is the vocabulary of llm-energy-measure: event types with
// their units, NATS subjects, the binary wire codec and the ClickHouse DDL
// (numbered migrations embedded in the binary). It performs no I/O.
//
// Every event travels as one NATS message whose payload starts with a
// 6-byte header: the magic "LEM", the wire version, the event kind and a
// reserved flags byte. The body is kind-specific; integers are zig-zag
// varints, timestamps inside a batch are delta-encoded, strings and slices
// are length-prefixed and bounded. See docs/events.md (generated) and
// docs/adr/0001-wire-encoding.md.
package schemas
