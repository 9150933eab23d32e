// Package suppress applies the server's false-positive suppressions on the
// agent. When an analyst marks a finding a false positive, the server sends
// every agent of that entity the entity's full set of active suppressions
// (wirev1.Suppressions on the CONTROL stream, after every HelloAck and on
// every change). This package keeps that set: in memory as a pipeline.Sink
// filter in front of the spool, which drops matching findings and counts
// them (findings_suppressed), and in the state directory (suppressions.json,
// written atomically) so that it applies from the start, offline too.
//
// The matching rule is the server's (store.Suppression.Matches in
// server/store, which the agent must not import): a finding is suppressed
// when a rule's detector equals the finding's and every non-empty field of
// the rule equals the finding's context (dst_port 0 = any, proto compared
// case-insensitively). test/suppresscheck runs one table of cases against
// both implementations.
package suppress

import (
	"strings"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// MaxRules bounds a set (what the server sends at most, what the file may
// hold).
const MaxRules = 10000

// Rule is one suppression.
type Rule struct {
	ID       int64  `json:"id,omitempty"` // the server's id, for logs
	Detector string `json:"detector"`
	SrcIP    string `json:"src_ip,omitempty"`
	DstIP    string `json:"dst_ip,omitempty"`
	DstPort  uint32 `json:"dst_port,omitempty"`
	Proto    string `json:"proto,omitempty"`
	Path     string `json:"path,omitempty"`
}

// Matches reports whether a finding of detector with context c falls under
// the rule. c may be nil (no context: only rules without context fields
// match).
func (r Rule) Matches(detector string, c *wirev1.FindingContext) bool {
	return r.Detector == detector &&
		(r.SrcIP == "" || r.SrcIP == c.GetSrcIp()) && (r.DstIP == "" || r.DstIP == c.GetDstIp()) &&
		(r.DstPort == 0 || r.DstPort == c.GetDstPort()) && (r.Proto == "" || strings.EqualFold(r.Proto, c.GetProto())) &&
		(r.Path == "" || r.Path == c.GetPath())
}

// Set is the entity's active suppressions as the server last sent them.
type Set struct {
	// Generation is the server's generation of the set (grows with every
	// change); 0 for an empty set never received.
	Generation uint64 `json:"generation"`
	Rules      []Rule `json:"rules"`
}

// FromWire converts the server's message. Rules beyond MaxRules are left
// out (truncated reports it).
func FromWire(m *wirev1.Suppressions) (s Set, truncated bool) {
	items := m.GetItems()
	if len(items) > MaxRules {
		items, truncated = items[:MaxRules], true
	}
	s = Set{Generation: m.GetGeneration(), Rules: make([]Rule, 0, len(items))}
	for _, it := range items {
		if it == nil {
			continue
		}
		s.Rules = append(s.Rules, Rule{ID: it.Id, Detector: it.Detector, SrcIP: it.SrcIp, DstIP: it.DstIp, DstPort: it.DstPort,
			Proto: it.Proto, Path: it.Path})
	}
	return s, truncated
}
