package app

import (
	"fmt"
	"slices"
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

// TestPreferActiveOnePerFamily: the plugin runs one model per feature-set
// family, so the pipeline starts one: of two baselines the newer feature
// set, of two active models (per-feature-set slots) the newer feature set,
// and an active model before any baseline of its family. Before, both
// nethost models were loaded, the plugin ran the last, and the agent
// reported both as active.
func TestPreferActiveOnePerFamily(t *testing.T) {
	nh6 := detect.BundleInfo{Path: "/usr/share/vigil/models/nethost-9.vgb", Name: "nethost", Version: 9, FeatureSet: "nethost/v6"}
	nh7 := detect.BundleInfo{Path: "/usr/share/vigil/models/nethost-10.vgb", Name: "nethost", Version: 10, FeatureSet: "nethost/v7"}
	nf := detect.BundleInfo{Path: "/usr/share/vigil/models/netflow-9.vgb", Name: "netflow", Version: 9, FeatureSet: "netflow/v1"}
	active := func(set string, v uint64) update.Active {
		return update.Active{Detector: "netflow", FeatureSet: set, Path: "/state/" + set, Manifest: bundle.Manifest{Name: "nethost", Version: v}}
	}
	sets := func(bs []detect.BundleInfo) (out []string) {
		for _, b := range bs {
			out = append(out, fmt.Sprintf("%s@%d", b.FeatureSet, b.Version))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		found []detect.BundleInfo
		act   []update.Active
		want  []string
	}{
		{"two baselines", []detect.BundleInfo{nh6, nf, nh7}, nil, []string{"nethost/v7@10", "netflow/v1@9"}},
		{"active of an older set than the baseline", []detect.BundleInfo{nh7, nf}, []update.Active{active("nethost/v6", 12)}, []string{"nethost/v6@12", "netflow/v1@9"}},
		{"two active slots", []detect.BundleInfo{nh6}, []update.Active{active("nethost/v7", 11), active("nethost/v6", 12)}, []string{"nethost/v7@11"}},
	} {
		if got := sets(preferActive(tc.found, tc.act)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
