package suppress

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestMatchesWhatTheServerStored: the spool fits a finding into the
// protocol's limits (wirev1.TrimFinding: a path over 4096 bytes is cut and
// ends in an ellipsis) after the filter, and the server makes a false
// positive's suppression from the finding it stored, cut. The filter
// compared that rule with the finding before the cut, so a suppression of a
// long path (a deep tree, or escaped bytes: SafePath writes a byte as
// \xNN) never applied on the agent: the finding kept coming back.
func TestMatchesWhatTheServerStored(t *testing.T) {
	for _, tt := range []struct {
		name string
		ctx  *wirev1.FindingContext
	}{
		{"long path", &wirev1.FindingContext{Path: "/srv/" + strings.Repeat(`\xe9`, 1200) + "/a.locked"}},
		{"long ip text", &wirev1.FindingContext{SrcIp: strings.Repeat("1", 200), DstPort: 22}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &wirev1.Finding{Detector: "fileactivity", Context: tt.ctx}
			// The server's view: what the spool sends and stores.
			stored := proto.Clone(f).(*wirev1.Finding)
			if !wirev1.TrimFinding(stored) {
				t.Fatal("the finding is within the limits: no test")
			}
			c := stored.Context
			rule := Rule{Detector: stored.Detector, SrcIP: c.SrcIp, DstIP: c.DstIp, DstPort: c.DstPort, Proto: c.Proto, Path: c.Path}
			next := &recSink{}
			fl := NewFilter(next, Set{Generation: 1, Rules: []Rule{rule}})
			if err := fl.Append(context.Background(), []*wirev1.Finding{f}); err != nil {
				t.Fatal(err)
			}
			if len(next.got) != 0 || fl.Suppressed() != 1 {
				t.Fatalf("the server's suppression of this finding did not apply: %d passed, %d suppressed", len(next.got), fl.Suppressed())
			}
			if f.Context != tt.ctx || len(tt.ctx.Path)+len(tt.ctx.SrcIp) <= wirev1.MaxShortStringLen {
				t.Fatal("the caller's finding was changed")
			}
		})
	}
	// A finding the cut leaves different still does not match.
	long := "/srv/" + strings.Repeat("a", 5000)
	next := &recSink{}
	fl := NewFilter(next, Set{Generation: 1, Rules: []Rule{{Detector: "fileactivity", Path: "/srv/a"}}})
	if err := fl.Append(context.Background(), []*wirev1.Finding{{Detector: "fileactivity", Context: &wirev1.FindingContext{Path: long}}}); err != nil {
		t.Fatal(err)
	}
	if len(next.got) != 1 {
		t.Fatal("an unrelated rule suppressed a long path")
	}
}
