package api

import (
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestHealthFlagsRefusedFindings: a finding the uplink dropped because the
// server refused it (uplink_findings_refused) is a lost finding, as a spool
// drop is: the agent's health must say so. The loss list named a counter
// no agent reports ("findings_dropped") and not this one.
func TestHealthFlagsRefusedFindings(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := agentHealth(store.Agent{LastSeen: now, Counters: map[string]uint64{"uplink_findings_refused": 1}}, now, time.Hour)
	if h.Status != HealthWarning {
		t.Fatalf("health %s %v with a refused finding dropped, want %s", h.Status, h.Problems, HealthWarning)
	}
	h = agentHealth(store.Agent{LastSeen: now, Counters: map[string]uint64{"uplink_findings_refused": 0}}, now, time.Hour)
	if h.Status != HealthOK {
		t.Fatalf("health %s %v with no refused finding, want %s", h.Status, h.Problems, HealthOK)
	}
}
