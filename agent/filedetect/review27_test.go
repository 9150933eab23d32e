package filedetect

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/watch"
)

// TestHostCountersExported: the plugin host counts failed launches, the
// plugin's standard error lines dropped over the rate limit and the
// anomalies of the plugin's answers it refused (pluginhost.Stats), but the
// pipeline exported only file_plugin_restarts: none of them reached Status,
// /metrics or the server.
func TestHostCountersExported(t *testing.T) {
	dir := t.TempDir()
	plugin, bundle := filepath.Join(dir, "vigil-detector-fileactivity"), filepath.Join(dir, "fileactivity-1.vgb")
	if err := os.WriteFile(plugin, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, []byte("bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Plugin: plugin, Bundle: detect.BundleInfo{Path: bundle}, Watch: watch.Config{Roots: []string{t.TempDir()}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		host pluginhost.Stats
		want map[string]uint64
	}{
		{"zero", pluginhost.Stats{}, map[string]uint64{
			"file_plugin_restarts": 0, "file_plugin_start_failures": 0, "file_plugin_log_lines_dropped": 0, "file_plugin_anomalies_refused": 0,
		}},
		{"each its own", pluginhost.Stats{Restarts: 1, StartFailures: 2, LogLinesDropped: 3, AnomaliesRefused: 4}, map[string]uint64{
			"file_plugin_restarts": 1, "file_plugin_start_failures": 2, "file_plugin_log_lines_dropped": 3, "file_plugin_anomalies_refused": 4,
		}},
		{"large", pluginhost.Stats{StartFailures: 1 << 40, LogLinesDropped: 1<<63 + 1, AnomaliesRefused: ^uint64(0)}, map[string]uint64{
			"file_plugin_start_failures": 1 << 40, "file_plugin_log_lines_dropped": 1<<63 + 1, "file_plugin_anomalies_refused": ^uint64(0),
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
	for _, name := range []string{"file_plugin_start_failures", "file_plugin_log_lines_dropped", "file_plugin_anomalies_refused"} {
		if _, ok := c[name]; !ok {
			t.Errorf("Counters() lacks %s", name)
		}
	}
}
