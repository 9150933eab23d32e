package api

import (
	"reflect"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestHealthCalibration: the per-sensor calibration counters an agent
// reports become one entry per feature set in its health, thresholds in
// model units; other counters and half-reported sets do not.
func TestHealthCalibration(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name     string
		counters map[string]uint64
		want     []calibration
	}{
		{"none", map[string]uint64{"captured": 5, "threshold_micro_nethost/v3": 50518}, nil},
		{"observing", map[string]uint64{"calibrated_nethost/v3": 0, "model_threshold_micro_nethost/v3": 50518, "threshold_micro_nethost/v3": 50518},
			[]calibration{{FeatureSet: "nethost/v3", ModelThreshold: 0.050518, Threshold: 0.050518}}},
		{"raised", map[string]uint64{
			"calibrated_nethost/v3": 1, "model_threshold_micro_nethost/v3": 50518, "threshold_micro_nethost/v3": 90686,
			"calibration_local_micro_nethost/v3": 90686, "calibration_samples_nethost/v3": 1079,
			"calibrated_netflow/v1": 1, "model_threshold_micro_netflow/v1": 65147, "threshold_micro_netflow/v1": 65147,
			"calibration_local_micro_netflow/v1": 6520, "calibration_samples_netflow/v1": 1079,
		}, []calibration{
			{FeatureSet: "netflow/v1", Calibrated: true, ModelThreshold: 0.065147, LocalQuantile: 0.00652, Samples: 1079, Threshold: 0.065147},
			{FeatureSet: "nethost/v3", Calibrated: true, ModelThreshold: 0.050518, LocalQuantile: 0.090686, Samples: 1079, Threshold: 0.090686},
		}},
		{"empty set name", map[string]uint64{"calibrated_": 1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := agentHealth(store.Agent{LastSeen: now, Counters: tc.counters}, now, time.Hour)
			if !reflect.DeepEqual(h.Calibration, tc.want) {
				t.Fatalf("calibration %+v, want %+v", h.Calibration, tc.want)
			}
			if h.Status != HealthOK {
				t.Fatalf("calibration changed the health: %s %v", h.Status, h.Problems)
			}
		})
	}
}
