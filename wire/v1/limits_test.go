package wirev1

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefg…"},
		{"ab€€€", 8, "ab€…"}, // "ab€" + "…" = 8 bytes
		{"ab€€€", 7, "ab…"},  // a cut inside € backs up to its start
		{"abc", 2, "ab"},     // no room for the mark
		{"日本語", 4, "…"},      // no whole rune fits before the mark
		{"x", 0, ""},
	}
	for _, tt := range tests {
		got := Truncate(tt.in, tt.max)
		if got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("Anomalous file /srv/€/x", 10)
	f.Add(strings.Repeat("日本", 100), MaxShortStringLen)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max %= 1 << 12
		got := Truncate(s, max)
		if len(s) <= max {
			if got != s {
				t.Fatalf("changed a string within the limit: %q", got)
			}
			return
		}
		if max >= 0 && len(got) > max {
			t.Fatalf("%d bytes above the limit %d", len(got), max)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("cut %q inside a rune: %q", s, got)
		}
		if !strings.HasPrefix(s, strings.TrimSuffix(got, Ellipsis)) {
			t.Fatalf("%q is not a prefix of %q", got, s)
		}
	})
}

// TestTrimFinding: a finding over the server's limits is fitted into them;
// sub-messages shared with other findings are not changed.
func TestTrimFinding(t *testing.T) {
	long := strings.Repeat("/very-long-dir€", 400) // 6,400 bytes
	model := &ModelRef{Name: strings.Repeat("m", 200), Version: 3}
	ctx := &FindingContext{Path: long, Proto: "file"}
	tops := make([]*FeatureContribution, 70)
	for i := range tops {
		tops[i] = &FeatureContribution{Name: "f", Contribution: 1}
	}
	tops[3] = &FeatureContribution{Name: strings.Repeat("n", 300)}
	f := &Finding{Detector: "fileactivity", Summary: "Anomalous file " + long, Model: model, Context: ctx, TopFeatures: tops}
	if !TrimFinding(f) {
		t.Fatal("TrimFinding reported no change")
	}
	if n := len(f.Summary); n > MaxSummaryLen || !strings.HasSuffix(f.Summary, Ellipsis) || !utf8.ValidString(f.Summary) {
		t.Errorf("summary of %d bytes, ends %q", n, f.Summary[len(f.Summary)-8:])
	}
	if n := len(f.Context.Path); n > MaxPathLen || !utf8.ValidString(f.Context.Path) {
		t.Errorf("path of %d bytes", n)
	}
	if len(f.Model.Name) > MaxShortStringLen || f.Model.Version != 3 {
		t.Errorf("model %v", f.Model)
	}
	if len(f.TopFeatures) != MaxTopFeatures || len(f.TopFeatures[3].Name) > MaxShortStringLen {
		t.Errorf("%d top features, the fourth named %d bytes", len(f.TopFeatures), len(f.TopFeatures[3].Name))
	}
	if len(model.Name) != 200 || ctx.Path != long || len(tops[3].Name) != 300 {
		t.Error("shared sub-messages changed in place")
	}
	if TrimFinding(f) {
		t.Error("a trimmed finding trimmed again")
	}
	ok := &Finding{Detector: "netflow", Summary: "ok", Context: &FindingContext{SrcIp: "10.0.0.1"}}
	want := proto.Clone(ok)
	if TrimFinding(ok) || !proto.Equal(ok, want) {
		t.Error("a finding within the limits changed")
	}
}

// TestTrimFindingNonFinite checks that scores, thresholds and contributions that are not finite
// become FiniteScore's values (NaN and +Inf the largest, -Inf its negative), without changing a
// top feature shared with another finding, and that finite numbers are kept.
// TestTrimFindingLeadIn: a lead-in the server would refuse is dropped, the
// finding kept; a valid one is left alone.
func TestTrimFindingLeadIn(t *testing.T) {
	const first = int64(2e18)
	for _, tc := range []struct {
		name    string
		t       int64
		pkts    uint64
		bytes   uint64
		keep    bool
		changed bool
	}{
		{"none", 0, 0, 0, true, false},
		{"ten seconds", first - 10e9, 7, 420, true, false},
		{"at first_seen", first, 1, 60, true, false},
		{"at the bound", first - MaxLeadIn, 1, 60, true, false},
		{"past the bound", first - MaxLeadIn - 1, 1, 60, false, true},
		{"after first_seen", first + 1, 1, 60, false, true},
		{"no packets", first - 1e9, 0, 60, false, true},
		{"packets without a time", 0, 4, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &Finding{Detector: "netflow", FirstSeenUnixNano: first, LeadInUnixNano: tc.t, LeadInPackets: tc.pkts, LeadInBytes: tc.bytes}
			if got := ValidLeadIn(f); got != tc.keep {
				t.Fatalf("ValidLeadIn = %v, want %v", got, tc.keep)
			}
			if got := TrimFinding(f); got != tc.changed {
				t.Fatalf("TrimFinding reported %v, want %v", got, tc.changed)
			}
			if tc.keep && (f.LeadInUnixNano != tc.t || f.LeadInPackets != tc.pkts || f.LeadInBytes != tc.bytes) {
				t.Fatalf("a valid lead-in changed: %v", f)
			}
			if !tc.keep && (f.LeadInUnixNano != 0 || f.LeadInPackets != 0 || f.LeadInBytes != 0) {
				t.Fatalf("an invalid lead-in kept: %v", f)
			}
			if !ValidLeadIn(f) || f.FirstSeenUnixNano != first {
				t.Fatalf("after TrimFinding: %v", f)
			}
		})
	}
}

func TestTrimFindingNonFinite(t *testing.T) {
	shared := &FeatureContribution{Name: "f", Contribution: math.NaN()}
	f := &Finding{Detector: "fileactivity", Score: math.Inf(1), Threshold: math.Inf(-1),
		TopFeatures: []*FeatureContribution{{Name: "g", Contribution: 0.5}, shared}}
	if !TrimFinding(f) {
		t.Fatal("TrimFinding reported no change")
	}
	if f.Score != MaxScore || f.Threshold != -MaxScore || f.TopFeatures[0].Contribution != 0.5 || f.TopFeatures[1].Contribution != MaxScore {
		t.Errorf("score %g, threshold %g, contributions %g and %g", f.Score, f.Threshold, f.TopFeatures[0].Contribution, f.TopFeatures[1].Contribution)
	}
	if !math.IsNaN(shared.Contribution) {
		t.Error("a shared top feature changed in place")
	}
	for _, c := range []struct{ in, want float64 }{{1.5, 1.5}, {math.NaN(), MaxScore}, {math.Inf(1), MaxScore}, {math.Inf(-1), -MaxScore}, {1e300, MaxScore}, {-1e300, -MaxScore}} {
		if got := FiniteScore(c.in); got != c.want {
			t.Errorf("FiniteScore(%g) = %g, want %g", c.in, got, c.want)
		}
	}
}
