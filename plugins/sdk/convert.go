package sdk

import (
	"net/netip"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

func kindToProto(k EventKind) pb.EventKind {
	switch k {
	case EventPacket:
		return pb.EventKind_EVENT_KIND_PACKET
	case EventFile:
		return pb.EventKind_EVENT_KIND_FILE
	default:
		return pb.EventKind_EVENT_KIND_UNSPECIFIED
	}
}

func kindFromProto(k pb.EventKind) EventKind {
	switch k {
	case pb.EventKind_EVENT_KIND_PACKET:
		return EventPacket
	case pb.EventKind_EVENT_KIND_FILE:
		return EventFile
	default:
		return EventUnspecified
	}
}

func modelToProto(m ModelInfo) *pb.ModelInfo {
	return &pb.ModelInfo{Name: m.Name, Version: m.Version, Digest: m.Digest, FeatureSet: m.FeatureSet, Threshold: m.Threshold}
}

func modelFromProto(m *pb.ModelInfo) ModelInfo {
	return ModelInfo{
		Name: m.GetName(), Version: m.GetVersion(), Digest: m.GetDigest(),
		FeatureSet: m.GetFeatureSet(), Threshold: m.GetThreshold(),
	}
}

func statsToProto(s Stats) *pb.BatchStats {
	return &pb.BatchStats{Count: s.Count, Anomalies: s.Anomalies, P50: s.P50, P90: s.P90, P99: s.P99, Max: s.Max}
}

func statsFromProto(s *pb.BatchStats) Stats {
	return Stats{
		Count: s.GetCount(), Anomalies: s.GetAnomalies(),
		P50: s.GetP50(), P90: s.GetP90(), P99: s.GetP99(), Max: s.GetMax(),
	}
}

// anomaliesToProto converts anomalies whose Index is relative to a batch of n
// records into absolute indexes base+Index, dropping out-of-range indexes (a
// buggy detector must not make the agent point at someone else's record).
func anomaliesToProto(as []Anomaly, base uint64, n int) []*pb.Anomaly {
	if len(as) == 0 {
		return nil
	}
	out := make([]*pb.Anomaly, 0, len(as))
	for _, a := range as {
		if a.Index >= uint64(n) {
			continue
		}
		pa := &pb.Anomaly{Index: base + a.Index, Score: a.Score, Threshold: a.Threshold, Context: a.Context,
			Aggregate: aggregateToProto(a.Aggregate)}
		if len(a.TopFeatures) > 0 {
			pa.TopFeatures = make([]*pb.Contribution, len(a.TopFeatures))
			for i, c := range a.TopFeatures {
				pa.TopFeatures[i] = &pb.Contribution{Name: c.Name, Contribution: c.Contribution}
			}
		}
		out = append(out, pa)
	}
	return out
}

func anomaliesFromProto(ps []*pb.Anomaly) []Anomaly {
	if len(ps) == 0 {
		return nil
	}
	out := make([]Anomaly, len(ps))
	for i, p := range ps {
		a := Anomaly{Index: p.GetIndex(), Score: p.GetScore(), Threshold: p.GetThreshold(), Context: p.GetContext(),
			Aggregate: aggregateFromProto(p.GetAggregate())}
		if len(p.GetTopFeatures()) > 0 {
			a.TopFeatures = make([]Contribution, len(p.GetTopFeatures()))
			for j, c := range p.GetTopFeatures() {
				a.TopFeatures[j] = Contribution{Name: c.GetName(), Contribution: c.GetContribution()}
			}
		}
		out[i] = a
	}
	return out
}

func aggregateToProto(g *Aggregate) *pb.Aggregate {
	if g == nil {
		return nil
	}
	pg := &pb.Aggregate{Count: g.Count, FirstNs: g.FirstNs, LastNs: g.LastNs, Bytes: g.Bytes,
		TcpSyn: g.TCPSyn, Udp: g.UDP, Icmp: g.ICMP, Arp: g.ARP, DstAddrsTruncated: g.DstAddrsTruncated,
		LeadFirstNs: g.LeadFirstNs, LeadCount: g.LeadCount, LeadBytes: g.LeadBytes}
	if len(g.DstPorts) > 0 {
		pg.DstPorts = make([]uint32, len(g.DstPorts))
		for i, p := range g.DstPorts {
			pg.DstPorts[i] = uint32(p)
		}
	}
	addrs := g.DstAddrs
	if len(addrs) > MaxAggregateAddrs {
		addrs, pg.DstAddrsTruncated = addrs[:MaxAggregateAddrs], true
	}
	if len(addrs) > 0 {
		pg.DstAddrs = make([][]byte, 0, len(addrs))
		for _, a := range addrs {
			if a.IsValid() {
				pg.DstAddrs = append(pg.DstAddrs, a.AsSlice())
			}
		}
	}
	return pg
}

// aggregateFromProto converts what a plugin sent, dropping what cannot be
// (ports above 65535, addresses of other lengths, addresses beyond
// MaxAggregateAddrs, which set DstAddrsTruncated, a lead-in that
// Aggregate.ValidLead refuses).
func aggregateFromProto(pg *pb.Aggregate) *Aggregate {
	if pg == nil {
		return nil
	}
	g := &Aggregate{Count: pg.GetCount(), FirstNs: pg.GetFirstNs(), LastNs: pg.GetLastNs(), Bytes: pg.GetBytes(),
		TCPSyn: pg.GetTcpSyn(), UDP: pg.GetUdp(), ICMP: pg.GetIcmp(), ARP: pg.GetArp(),
		DstAddrsTruncated: pg.GetDstAddrsTruncated(),
		LeadFirstNs:       pg.GetLeadFirstNs(), LeadCount: pg.GetLeadCount(), LeadBytes: pg.GetLeadBytes()}
	if !g.ValidLead() {
		// A lead-in after the first record, too long before it, or a time
		// without records: not one the detector could have seen.
		g.LeadFirstNs, g.LeadCount, g.LeadBytes = 0, 0, 0
	}
	if ps := pg.GetDstPorts(); len(ps) > 0 {
		g.DstPorts = make([]uint16, 0, len(ps))
		for _, p := range ps {
			if p <= 0xffff {
				g.DstPorts = append(g.DstPorts, uint16(p))
			}
		}
	}
	if as := pg.GetDstAddrs(); len(as) > 0 {
		g.DstAddrs = make([]netip.Addr, 0, min(len(as), MaxAggregateAddrs))
		for _, b := range as {
			a, ok := netip.AddrFromSlice(b)
			if !ok {
				continue
			}
			if len(g.DstAddrs) == MaxAggregateAddrs {
				g.DstAddrsTruncated = true
				break
			}
			g.DstAddrs = append(g.DstAddrs, a)
		}
	}
	return g
}

func healthFromProto(h *pb.HealthResponse) Health {
	return Health{
		OK: h.GetOk(), Message: h.GetMessage(), Model: modelFromProto(h.GetModel()),
		MemoryBytes: h.GetMemoryBytes(), Stats: h.GetStats(),
	}
}

// Bounds of an anomaly's context entries (CheckResult): the keys; the
// values of the well-known address, port and protocol keys, which the
// agent keys its findings by; any other value (a path escaped by
// event.SafePath: up to 4 bytes for each of event.MaxPathLen). Without
// them one anomaly could carry a source address of the whole message's
// size (megabytes), which the agent kept as the key of an open finding.
const (
	MaxContextKey   = 64
	MaxContextShort = 128
	MaxContextValue = 4 * event.MaxPathLen
)

// shortContext are the keys whose values MaxContextShort bounds.
var shortContext = map[string]bool{
	ContextSrcIP: true, ContextDstIP: true, ContextSrcPort: true, ContextDstPort: true, ContextProto: true,
}

// CheckResult makes a plugin's answer for the records [start, end) of a
// batch consistent before the agent uses it, and returns the number of
// anomalies it dropped or clamped. A plugin may have been compromised by
// the records it parses; the SDK's own server never sends what this
// refuses. Dropped: an anomaly outside the batch, or one for a record an
// earlier anomaly already reported (the first stands). Clamped: an
// aggregate that stands for more records than the batch has left (the
// anomalies of a batch cover distinct records), kinds counted beyond its
// records, top features beyond MaxTopContributions, context entries beyond
// MaxContextKey, MaxContextShort or MaxContextValue (dropped). The statistics are
// those of end-start records, with at most as many anomalies.
func CheckResult(st *Stats, as []Anomaly, start, end uint64) ([]Anomaly, uint64) {
	n := end - start
	if end < start {
		n = 0
	}
	st.Count, st.Anomalies = n, min(st.Anomalies, n)
	var fixed uint64
	left := n                    // records the batch has left for the anomalies that follow
	var seen map[uint64]struct{} // the kept indexes, once they come out of order
	k := 0
	for i := range as {
		a := as[i]
		if a.Index < start || a.Index >= end || left == 0 {
			fixed++
			continue
		}
		if seen == nil && k > 0 && a.Index <= as[k-1].Index {
			seen = make(map[uint64]struct{}, len(as))
			for _, b := range as[:k] {
				seen[b.Index] = struct{}{}
			}
		}
		if seen != nil {
			if _, dup := seen[a.Index]; dup {
				fixed++
				continue
			}
			seen[a.Index] = struct{}{}
		}
		clamped := false
		for k, v := range a.Context {
			if len(k) > MaxContextKey || len(v) > MaxContextValue || (len(v) > MaxContextShort && shortContext[k]) {
				delete(a.Context, k)
				clamped = true
			}
		}
		if len(a.TopFeatures) > MaxTopContributions {
			a.TopFeatures, clamped = a.TopFeatures[:MaxTopContributions], true
		}
		if g := a.Aggregate; g != nil {
			if a.Records() > left {
				g.Count, clamped = left, true
			}
			c := a.Records()
			for _, v := range []*uint64{&g.TCPSyn, &g.UDP, &g.ICMP, &g.ARP} {
				if *v > c {
					*v, clamped = c, true
				}
			}
		}
		if clamped {
			fixed++
		}
		left -= a.Records()
		as[k] = a
		k++
	}
	return as[:k], fixed
}
