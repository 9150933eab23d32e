package sdk

import (
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
		pa := &pb.Anomaly{Index: base + a.Index, Score: a.Score, Threshold: a.Threshold, Context: a.Context}
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
		a := Anomaly{Index: p.GetIndex(), Score: p.GetScore(), Threshold: p.GetThreshold(), Context: p.GetContext()}
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

func healthFromProto(h *pb.HealthResponse) Health {
	return Health{
		OK: h.GetOk(), Message: h.GetMessage(), Model: modelFromProto(h.GetModel()),
		MemoryBytes: h.GetMemoryBytes(), Stats: h.GetStats(),
	}
}
