package sdk

import (
	"testing"

	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

// TestAggregateLead: a plugin's lead-in reaches the host when it is
// consistent and is dropped whole when it is not (a plugin is outside input
// to the agent).
func TestAggregateLead(t *testing.T) {
	const first = int64(1_700_000_000_000_000_000)
	for _, tc := range []struct {
		name               string
		leadNs             int64
		count, bytes       uint64
		wantNs             int64
		wantCount, wantLen uint64
	}{
		{"none", 0, 0, 0, 0, 0, 0},
		{"ten seconds", first - 10e9, 7, 420, first - 10e9, 7, 420},
		{"same instant", first, 1, 60, first, 1, 60},
		{"at the bound", first - int64(MaxLeadIn), 3, 180, first - int64(MaxLeadIn), 3, 180},
		{"past the bound", first - int64(MaxLeadIn) - 1, 3, 180, 0, 0, 0},
		{"after the first record", first + 1, 3, 180, 0, 0, 0},
		{"time without records", first - 1e9, 0, 0, 0, 0, 0},
		{"records without a time", 0, 5, 300, 0, 0, 0},
		{"bytes without a time", 0, 0, 300, 0, 0, 0},
		{"negative time", -1, 2, 120, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := aggregateFromProto(&pb.Aggregate{Count: 2, FirstNs: first, LastNs: first + 1e9,
				LeadFirstNs: tc.leadNs, LeadCount: tc.count, LeadBytes: tc.bytes})
			if g.LeadFirstNs != tc.wantNs || g.LeadCount != tc.wantCount || g.LeadBytes != tc.wantLen {
				t.Fatalf("lead %d/%d/%d, want %d/%d/%d", g.LeadFirstNs, g.LeadCount, g.LeadBytes, tc.wantNs, tc.wantCount, tc.wantLen)
			}
			if g.Count != 2 || g.FirstNs != first {
				t.Fatalf("the rest of the aggregate changed: %+v", g)
			}
			back := aggregateToProto(g)
			if back.GetLeadFirstNs() != tc.wantNs || back.GetLeadCount() != tc.wantCount || back.GetLeadBytes() != tc.wantLen {
				t.Fatalf("round trip: %v", back)
			}
		})
	}
}
