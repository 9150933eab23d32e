package app

import (
	"testing"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
)

// TestPreferActive: a model the updater activated replaces the baseline
// bundle of its feature set; other detectors' models are ignored.
func TestPreferActive(t *testing.T) {
	found := []detect.BundleInfo{
		{Path: "/bin/models/nethost-1.vgb", Name: "nethost", Version: 1, FeatureSet: "nethost/v1"},
		{Path: "/bin/models/netflow-1.vgb", Name: "netflow", Version: 1, FeatureSet: "netflow/v1"},
	}
	act := []update.Active{
		{Detector: "netflow", FeatureSet: "nethost/v1", Path: "/state/models/netflow/nethost-3.vgb", Digest: "sha256:aa",
			Manifest: bundle.Manifest{Name: "nethost", Version: 3}},
		{Detector: "fileactivity", FeatureSet: "fileactivity/v1", Path: "/state/models/fileactivity/f-2.vgb"},
	}
	got := preferActive(found, act)
	if len(got) != 2 {
		t.Fatalf("preferActive = %+v", got)
	}
	if got[0].Path != "/state/models/netflow/nethost-3.vgb" || got[0].Version != 3 || got[0].Digest != "sha256:aa" {
		t.Errorf("nethost/v1: %+v, want the active model", got[0])
	}
	if got[1] != found[1] {
		t.Errorf("netflow/v1: %+v, want the baseline", got[1])
	}
	if got := preferActive(found, nil); len(got) != 2 || got[0] != found[0] {
		t.Errorf("no active models: %+v", got)
	}
}
