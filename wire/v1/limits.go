package wirev1

import (
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

// Limits on a FindingsBatch and its findings (string lengths in bytes). The
// server refuses a batch that breaks one of them: it closes the connection
// with CodeProtocol and acknowledges nothing of that batch. The agent fits
// its findings into them before spooling them (TrimFinding), and Reader
// refuses a frame with more findings or top features than they allow
// before decoding it.
const (
	MaxBatchFindings  = 10000 // findings in one FindingsBatch
	MaxDetectorLen    = 64    // Finding.detector and ModelRef.detector (the detector must not be empty)
	MaxSummaryLen     = 4096  // Finding.summary
	MaxPathLen        = 4096  // FindingContext.path
	MaxShortStringLen = 128   // ModelRef name and digest, FindingContext IPs, proto and MAC, feature names
	MaxTopFeatures    = 64    // Finding.top_features
	// MaxLeadIn bounds how far Finding.lead_in_unix_nano may lie before
	// first_seen_unix_nano, in ns (5 minutes).
	MaxLeadIn = 5 * 60 * 1_000_000_000
)

// MaxScore is the largest score, threshold or feature contribution a finding
// carries. The server refuses a finding with a number that is not finite
// (its API serves findings as JSON, which has none; encoding/json fails on
// one too), but a detector flags a NaN score as the most anomalous and a
// model can overflow to +Inf: such a value is sent as MaxScore (NaN and
// +Inf) or its negative (-Inf). It is the largest float32 (models score in
// float32), so a score/threshold ratio computed in float64 stays finite for
// any positive float32 threshold.
const MaxScore = math.MaxFloat32

// FiniteScore returns v, or MaxScore for NaN and values at or above it, or
// -MaxScore for values at or below its negative.
func FiniteScore(v float64) float64 {
	switch {
	case math.IsNaN(v) || v >= MaxScore:
		return MaxScore
	case v <= -MaxScore:
		return -MaxScore
	}
	return v
}

// Ellipsis ends a string that Truncate cut.
const Ellipsis = "…"

// Truncate returns s if it has at most max bytes. Otherwise it cuts s on a
// UTF-8 boundary and appends Ellipsis, so that the result has at most max
// bytes and stays valid UTF-8 (protobuf strings must be).
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	if max <= 0 {
		return ""
	}
	mark := Ellipsis
	if max < len(mark) {
		mark = ""
	}
	i := max - len(mark)
	// A valid rune is at most utf8.UTFMax bytes long: back up at most
	// UTFMax-1 continuation bytes to its start.
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(s[i]); j++ {
		i--
	}
	return s[:i] + mark
}

// ValidLeadIn reports whether f's lead-in is one the server accepts: none
// (all three fields 0), or at least one packet from a time at most
// MaxLeadIn before first_seen and not after it.
func ValidLeadIn(f *Finding) bool {
	t, first := f.GetLeadInUnixNano(), f.GetFirstSeenUnixNano()
	if t == 0 {
		return f.GetLeadInPackets() == 0 && f.GetLeadInBytes() == 0
	}
	// With t <= first, first-t is in [0, 2^64): exact in uint64, where the
	// int64 difference of a far-past t wraps negative and would pass.
	return f.GetLeadInPackets() > 0 && t <= first && uint64(first)-uint64(t) <= MaxLeadIn
}

// TrimFinding fits f's bounded strings into the limits above (Truncate) and
// keeps its first MaxTopFeatures top features. It reports whether it
// changed f. f itself is changed in place; its model reference, context and
// top features, which producers may share between findings, are replaced
// by trimmed copies instead. A score, threshold or contribution that is not
// finite becomes FiniteScore's value, and a lead-in that ValidLeadIn
// refuses is dropped. What no cut can repair (an empty
// detector, a port above 65535) is left for the server to refuse.
func TrimFinding(f *Finding) bool {
	if f == nil {
		return false
	}
	changed := false
	cut := func(s *string, max int) {
		if len(*s) > max {
			*s = Truncate(*s, max)
			changed = true
		}
	}
	cut(&f.Detector, MaxDetectorLen)
	cut(&f.Summary, MaxSummaryLen)
	if m := f.Model; m != nil && (len(m.Name) > MaxShortStringLen || len(m.Digest) > MaxShortStringLen || len(m.Detector) > MaxDetectorLen) {
		m = proto.Clone(m).(*ModelRef)
		cut(&m.Name, MaxShortStringLen)
		cut(&m.Digest, MaxShortStringLen)
		cut(&m.Detector, MaxDetectorLen)
		f.Model = m
	}
	if c := f.Context; c != nil && (len(c.SrcIp) > MaxShortStringLen || len(c.DstIp) > MaxShortStringLen ||
		len(c.Proto) > MaxShortStringLen || len(c.SrcMac) > MaxShortStringLen || len(c.Path) > MaxPathLen) {
		c = proto.Clone(c).(*FindingContext)
		cut(&c.SrcIp, MaxShortStringLen)
		cut(&c.DstIp, MaxShortStringLen)
		cut(&c.Proto, MaxShortStringLen)
		cut(&c.SrcMac, MaxShortStringLen)
		cut(&c.Path, MaxPathLen)
		f.Context = c
	}
	if len(f.TopFeatures) > MaxTopFeatures {
		f.TopFeatures = f.TopFeatures[:MaxTopFeatures:MaxTopFeatures]
		changed = true
	}
	fin := func(v *float64) {
		if w := FiniteScore(*v); w != *v {
			*v = w
			changed = true
		}
	}
	fin(&f.Score)
	fin(&f.Threshold)
	if !ValidLeadIn(f) {
		// A lead-in is context, not evidence: one the server would refuse
		// is dropped rather than the finding.
		f.LeadInUnixNano, f.LeadInPackets, f.LeadInBytes = 0, 0, 0
		changed = true
	}
	copied := false
	for i, tf := range f.TopFeatures {
		if tf == nil || (len(tf.Name) <= MaxShortStringLen && FiniteScore(tf.Contribution) == tf.Contribution) {
			continue
		}
		if !copied {
			f.TopFeatures = append([]*FeatureContribution(nil), f.TopFeatures...)
			copied = true
		}
		tf = proto.Clone(tf).(*FeatureContribution)
		cut(&tf.Name, MaxShortStringLen)
		fin(&tf.Contribution)
		f.TopFeatures[i] = tf
	}
	return changed
}
