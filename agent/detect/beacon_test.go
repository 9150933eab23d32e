package detect

import (
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// beaconAnomaly is a connection start the netflow plugin's beacon rule
// flagged (plugins/netflow beacon.go): medium, led by "beacon", with the
// rule's evidence in the context.
func beaconAnomaly(tsSec float64, conns, dst string) sdk.Anomaly {
	an := anomaly("10.99.0.5", "10.99.0.9", 443, tsSec, 1.5, 0x02)
	an.TopFeatures = []sdk.Contribution{{Name: beaconFeature, Contribution: 1}}
	an.Context[ctxBeaconPeriodNs] = "2200000000"
	an.Context[ctxBeaconConnections] = conns
	an.Context[ctxBeaconDst] = dst
	return an
}

// TestBeaconFinding: one flagged start of a beacon is a medium finding
// titled "Periodic connections", whose summary gives the interval, where the
// connections go and how many there were; a destination that is not an
// address and port is left out of the summary.
func TestBeaconFinding(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	for i, n := range []string{"28", "29"} {
		an := beaconAnomaly(100+2.2*float64(i), n, "10.99.0.9:443")
		a.Add(&an)
	}
	out := a.Flush()
	if len(out) != 1 {
		t.Fatalf("%d findings, want 1", len(out))
	}
	f := out[0]
	if f.Severity != wirev1.Severity_SEVERITY_MEDIUM {
		t.Errorf("severity %v, want medium", f.Severity)
	}
	want := "Periodic connections (C2-like beacon): 2 anomalous packets from 10.99.0.5 to 1 host, 1 port; a new connection to 10.99.0.9:443 every 2.2s (29 so far)"
	if f.Summary != want {
		t.Errorf("summary\n%q, want\n%q", f.Summary, want)
	}

	a = NewAggregator(AggregatorConfig{})
	an := beaconAnomaly(100, "28", "10.99.0.9:443\x1b[31m; rm -rf")
	a.Add(&an)
	out = a.Flush()
	if len(out) != 1 {
		t.Fatalf("one start, a bad destination: %d findings, want 1 (one start is enough)", len(out))
	}
	if s := out[0].Summary; strings.Contains(s, "rm -rf") || strings.Contains(s, "\x1b") || !strings.Contains(s, "a new connection every 2.2s (28 so far)") {
		t.Errorf("summary with a bad destination: %q", s)
	}
}
