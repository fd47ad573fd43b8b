package schemas

import (
	"fmt"
	"strings"
)

// WireVersion is the version of the wire encoding and of the subject tree
// (lem.v1.*). A breaking change gets a new version and new subjects; old
// decoders reject it with ErrVersion instead of misreading it.
const WireVersion = 1

// Kind identifies an event type on the wire and in subjects.
type Kind uint8

// Event kinds. Values are frozen: they are written into every message.
const (
	KindPower   Kind = 1 // batch of power samples of one device
	KindEnergy  Kind = 2 // batch of cumulative energy-counter readings of one device
	KindState   Kind = 3 // batch of device state samples (clocks, temperature, ...)
	KindRequest Kind = 4 // batch of completed request lifecycles of one run
	KindToken   Kind = 5 // batch of token/chunk arrivals of one run
	KindRun     Kind = 6 // one run lifecycle event (start or end of a cycle)
	KindGap     Kind = 7 // batch of collection gaps of one device
	KindClock   Kind = 8 // batch of sensor-clock offset estimates of one device
	KindMetric  Kind = 9 // batch of inference-server metric samples scraped during a run
	// KindPlatform is one change of the results platform's state (a run
	// published, an upload verified or refused, a token made or revoked,
	// a sign-in), so that its history is queryable beside the telemetry.
	KindPlatform Kind = 10
)

func (k Kind) String() string {
	if s := specByKind[k]; s != nil {
		return s.KindName
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind returns the kind named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if specByKind[k].KindName == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown event kind %q", s)
}

// Subject prefixes.
const (
	SubjectRoot = "lem.v1"
	// DeadLetterRoot is where ingest republishes messages it cannot accept,
	// as lem.dlq.v1.<kind>.
	DeadLetterRoot = "lem.dlq.v1"
)

// SubjectFilter returns the subject filter matching every message of kind k.
func SubjectFilter(k Kind) string { return SubjectRoot + "." + k.String() + ".>" }

// DeviceSubject returns lem.v1.<kind>.<host>.<device index> for a
// device-scoped kind.
func DeviceSubject(k Kind, host string, device uint32) string {
	return fmt.Sprintf("%s.%s.%s.%d", SubjectRoot, k, SubjectToken(host), device)
}

// RunSubject returns lem.v1.<kind>.<run id> for a run-scoped kind.
func RunSubject(k Kind, runID string) string {
	return SubjectRoot + "." + k.String() + "." + SubjectToken(runID)
}

// SubjectToken makes s safe as one subject token: separators, wildcards and
// whitespace become '_'; an empty s becomes "_".
func SubjectToken(s string) string {
	if s == "" {
		return "_"
	}
	if !strings.ContainsAny(s, ".*> \t\r\n") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			b[i] = '_'
		}
	}
	return string(b)
}
