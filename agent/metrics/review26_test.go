package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-edge/vigil/agent/uplink"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestPipelineCountersExported: the pipelines' loss counters (kernel_drops,
// events_lost, watch_dropped, the spool append failures) and the uplink's
// refused, renumbered and status-report counters went to the server and to
// `status`, but not to /metrics, where a site's monitoring looks.
func TestPipelineCountersExported(t *testing.T) {
	s := Sources{
		Spool: func() *wirev1.SpoolStats { return &wirev1.SpoolStats{} },
		Uplink: func() uplink.Stats {
			return uplink.Stats{FindingsRefused: 2, SeqRenumbers: 1, FindingsRenumbered: 40, ModelStatusDropped: 3,
				ModelStatusRestored: 4, ModelStatusCorruptFiles: 1}
		},
		Counters: func() map[string]uint64 {
			return map[string]uint64{"kernel_drops": 5, "netflow_findings_lost": 6, "watch_dirs": 7}
		},
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(Registry(s), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	m := string(b)
	for _, want := range []string{
		`vigil_agent_pipeline_stat{name="kernel_drops"} 5`,
		`vigil_agent_pipeline_stat{name="netflow_findings_lost"} 6`,
		`vigil_agent_pipeline_stat{name="watch_dirs"} 7`,
		"vigil_agent_findings_refused_total 2",
		"vigil_agent_seq_renumbers_total 1",
		"vigil_agent_findings_renumbered_total 40",
		"vigil_agent_model_status_dropped_total 3",
		"vigil_agent_model_status_restored_total 4",
		"vigil_agent_model_status_corrupt_files 1",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
