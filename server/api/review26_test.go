package api

import (
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestHealthFlagsEveryLoss: every counter by which an agent reports lost
// data makes its health a warning. File-event losses (file_events_lost,
// watch_dropped, watch_overflows, file_plugin_restarts) were not in the
// list: a sensor whose file watcher lost events showed "ok"; the spool
// append failures and the findings dropped while the spool could not be
// written are new.
func TestHealthFlagsEveryLoss(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, name := range []string{
		"kernel_drops", "events_lost", "plugin_restarts", "decode_errors",
		"file_events_lost", "file_plugin_restarts", "watch_dropped", "watch_overflows",
		"netflow_append_errors", "netflow_findings_lost", "file_append_errors", "file_findings_lost",
		"uplink_findings_refused",
		"plugin_anomalies_refused", "file_plugin_anomalies_refused", "spool_corrupt_files",
		"uplink_model_status_dropped", "uplink_model_status_corrupt_files",
	} {
		h := agentHealth(store.Agent{LastSeen: now, Counters: map[string]uint64{name: 2}}, now, time.Hour)
		if h.Status != HealthWarning || len(h.Problems) != 1 || h.Problems[0] != name+" 2" {
			t.Errorf("%s 2: health %s %v, want %s [%s 2]", name, h.Status, h.Problems, HealthWarning, name)
		}
	}
	h := agentHealth(store.Agent{LastSeen: now, Counters: map[string]uint64{"captured": 9, "file_events": 9, "watch_dirs": 3}}, now, time.Hour)
	if h.Status != HealthOK {
		t.Errorf("health %s %v with no loss, want %s", h.Status, h.Problems, HealthOK)
	}
}
