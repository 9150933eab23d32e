package detect

import (
	"os"
	"testing"

	"github.com/vigil-edge/vigil/agent/pluginhost"
)

// TestHostCountersExported: the plugin host counts failed launches, the
// plugin's standard error lines dropped over the rate limit and the
// anomalies of the plugin's answers it refused (pluginhost.Stats), but the
// pipeline exported only plugin_restarts: none of them reached Status,
// /metrics or the server.
func TestHostCountersExported(t *testing.T) {
	p, err := New(Config{Plugin: fakePlugin(t), Bundles: []BundleInfo{{Path: fakeBundle(t), FeatureSet: "nethost/v1"}},
		Interfaces: []string{"eth-test0"}, StageBundles: true})
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(p.stageDir)
	for _, tc := range []struct {
		name string
		host pluginhost.Stats
		want map[string]uint64
	}{
		{"zero", pluginhost.Stats{}, map[string]uint64{
			"plugin_restarts": 0, "plugin_start_failures": 0, "plugin_log_lines_dropped": 0, "plugin_anomalies_refused": 0,
		}},
		{"each its own", pluginhost.Stats{Restarts: 1, StartFailures: 2, LogLinesDropped: 3, AnomaliesRefused: 4}, map[string]uint64{
			"plugin_restarts": 1, "plugin_start_failures": 2, "plugin_log_lines_dropped": 3, "plugin_anomalies_refused": 4,
		}},
		{"large", pluginhost.Stats{StartFailures: 1 << 40, LogLinesDropped: 1<<63 + 1, AnomaliesRefused: ^uint64(0)}, map[string]uint64{
			"plugin_start_failures": 1 << 40, "plugin_log_lines_dropped": 1<<63 + 1, "plugin_anomalies_refused": ^uint64(0),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.counters(Stats{Host: tc.host})
			for name, want := range tc.want {
				if got, ok := c[name]; !ok || got != want {
					t.Errorf("counter %s = %d (present %t), want %d", name, got, ok, want)
				}
			}
		})
	}
	// Counters, what Status and /metrics read, names them too.
	c := p.Counters()
	for _, name := range []string{"plugin_start_failures", "plugin_log_lines_dropped", "plugin_anomalies_refused"} {
		if _, ok := c[name]; !ok {
			t.Errorf("Counters() lacks %s", name)
		}
	}
}
