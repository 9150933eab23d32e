package store

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// A finding's detail (everything no query filters or sorts on: first/last
// seen, count, score, threshold, model, context, top features, summary,
// packets, bytes, lead-in) is stored in ONE column, findings.detail (migration 5),
// instead of one column each: ingest then binds 5 values per finding instead
// of 23, and binding was about a quarter of the committer's CPU
// (docs/benchmarks.md). Rows stored before migration 5 keep their detail in
// the old columns (detail IS NULL); scanFinding reads both.
//
// Format: one version byte (detailFormat), then a protobuf encoding of the
// detail fields with wirev1.Finding's field numbers (so proto.Unmarshal into
// a wirev1.Finding reads it). Strings are made valid UTF-8 and numbers finite
// when encoded, as the old columns' JSON encoding did.
const detailFormat = 1

// Field numbers of wirev1.Finding, ModelRef, FindingContext and
// FeatureContribution (wire/v1/vigil.proto).
const (
	fFirstSeen   = 4
	fLastSeen    = 5
	fCount       = 6
	fScore       = 8
	fThreshold   = 9
	fModel       = 10
	fContext     = 11
	fTopFeatures = 12
	fSummary     = 13
	fPackets     = 14
	fBytes       = 15
	fLeadIn      = 16
	fLeadPackets = 17
	fLeadBytes   = 18

	fModelName    = 1
	fModelVersion = 2
	fModelDigest  = 3

	fCtxSrcIP   = 1
	fCtxDstIP   = 2
	fCtxSrcPort = 3
	fCtxDstPort = 4
	fCtxProto   = 5
	fCtxPath    = 6
	fCtxSrcMAC  = 7

	fTFName         = 1
	fTFContribution = 2
)

// appendDetail appends f's detail blob to b. first_seen and last_seen
// default to the finding's time.
func appendDetail(b []byte, f *wirev1.Finding) []byte {
	b = append(b, detailFormat)
	t := f.GetTimeUnixNano()
	first, last := f.GetFirstSeenUnixNano(), f.GetLastSeenUnixNano()
	if first == 0 {
		first = t
	}
	if last == 0 {
		last = t
	}
	b = appendVarintField(b, fFirstSeen, uint64(first))
	b = appendVarintField(b, fLastSeen, uint64(last))
	b = appendVarintField(b, fCount, f.GetCount())
	b = appendDoubleField(b, fScore, f.GetScore())
	b = appendDoubleField(b, fThreshold, f.GetThreshold())
	if m := f.GetModel(); m != nil {
		b = appendMessage(b, fModel, func(b []byte) []byte {
			b = appendStringField(b, fModelName, m.GetName())
			b = appendVarintField(b, fModelVersion, m.GetVersion())
			return appendStringField(b, fModelDigest, m.GetDigest())
		})
	}
	if c := f.GetContext(); c != nil {
		b = appendMessage(b, fContext, func(b []byte) []byte {
			b = appendStringField(b, fCtxSrcIP, c.GetSrcIp())
			b = appendStringField(b, fCtxDstIP, c.GetDstIp())
			b = appendVarintField(b, fCtxSrcPort, uint64(c.GetSrcPort()))
			b = appendVarintField(b, fCtxDstPort, uint64(c.GetDstPort()))
			b = appendStringField(b, fCtxProto, c.GetProto())
			b = appendStringField(b, fCtxPath, c.GetPath())
			return appendStringField(b, fCtxSrcMAC, c.GetSrcMac())
		})
	}
	for _, tf := range f.GetTopFeatures() {
		if tf == nil {
			continue
		}
		b = appendMessage(b, fTopFeatures, func(b []byte) []byte {
			b = appendStringField(b, fTFName, tf.GetName())
			return appendDoubleField(b, fTFContribution, tf.GetContribution())
		})
	}
	b = appendStringField(b, fSummary, f.GetSummary())
	b = appendVarintField(b, fPackets, f.GetPackets())
	b = appendVarintField(b, fBytes, f.GetBytes())
	if f.GetLeadInPackets() > 0 && wirev1.ValidLeadIn(f) {
		b = appendVarintField(b, fLeadIn, uint64(f.GetLeadInUnixNano()))
		b = appendVarintField(b, fLeadPackets, f.GetLeadInPackets())
		b = appendVarintField(b, fLeadBytes, f.GetLeadInBytes())
	}
	return b
}

// appendMessage appends an embedded message field whose body fn appends.
// The length prefix is written after the body (a varint of 1 byte is
// reserved, and the body moved if its length needs more).
func appendMessage(b []byte, num protowire.Number, fn func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	at := len(b)
	b = append(b, 0)
	b = fn(b)
	n := len(b) - at - 1
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	size := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, size-1)...)
	copy(b[at+size:], b[at+1:at+1+n])
	protowire.AppendVarint(b[:at], uint64(n))
	return b
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendDoubleField(b []byte, num protowire.Number, v float64) []byte {
	v = finiteOr0(v)
	if v == 0 && !math.Signbit(v) {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

var errDetail = errors.New("bad detail encoding")

// decodeDetail fills fi's detail fields from a detail blob. fi.Time must be
// set (the default of first and last seen).
func decodeDetail(fi *Finding, b []byte) error {
	if len(b) == 0 || b[0] != detailFormat {
		return fmt.Errorf("finding %d detail: %w (format byte)", fi.ID, errDetail)
	}
	var w wirev1.Finding
	if err := proto.Unmarshal(b[1:], &w); err != nil {
		return fmt.Errorf("finding %d detail: %w: %w", fi.ID, errDetail, err)
	}
	fi.FirstSeen, fi.LastSeen = fi.Time, fi.Time
	if n := w.GetFirstSeenUnixNano(); n != 0 {
		fi.FirstSeen = time.Unix(0, n).UTC()
	}
	if n := w.GetLastSeenUnixNano(); n != 0 {
		fi.LastSeen = time.Unix(0, n).UTC()
	}
	fi.Count = w.GetCount()
	fi.Score, fi.Threshold = finiteOr0(w.GetScore()), finiteOr0(w.GetThreshold())
	m := w.GetModel()
	fi.Model = ModelRef{Name: m.GetName(), Version: m.GetVersion(), Digest: m.GetDigest()}
	c := w.GetContext()
	fi.Context = FindingContext{SrcIP: c.GetSrcIp(), DstIP: c.GetDstIp(), SrcPort: c.GetSrcPort(), DstPort: c.GetDstPort(),
		Proto: c.GetProto(), Path: c.GetPath(), SrcMAC: c.GetSrcMac()}
	fi.TopFeatures = make([]FeatureContribution, 0, len(w.GetTopFeatures()))
	for _, tf := range w.GetTopFeatures() {
		fi.TopFeatures = append(fi.TopFeatures, FeatureContribution{Name: tf.GetName(), Contribution: finiteOr0(tf.GetContribution())})
	}
	fi.Summary = w.GetSummary()
	fi.Packets, fi.Bytes = w.GetPackets(), w.GetBytes()
	if w.GetLeadInPackets() > 0 && w.GetLeadInUnixNano() != 0 {
		fi.LeadIn = &LeadIn{Since: time.Unix(0, w.GetLeadInUnixNano()).UTC(), Packets: w.GetLeadInPackets(), Bytes: w.GetLeadInBytes()}
	}
	return nil
}
