package api

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// Agent health levels, worst last.
const (
	HealthOK       = "ok"
	HealthUnknown  = "unknown" // enrolled, never reported
	HealthWarning  = "warning"
	HealthCritical = "critical"
	HealthOffline  = "offline"
	HealthRevoked  = "revoked"
)

// healthRank orders levels for "problems first" (higher = worse).
var healthRank = map[string]int{HealthOK: 0, HealthRevoked: 1, HealthUnknown: 2, HealthWarning: 3, HealthCritical: 4, HealthOffline: 5}

// agentView is an agent as the API shows it: stored fields plus its health.
type agentView struct {
	store.Agent
	Health health `json:"health"`
}

type health struct {
	Status       string            `json:"status"`
	Rank         int               `json:"rank"` // sort key: higher is worse
	Problems     []string          `json:"problems,omitempty"`
	Spool        *store.SpoolStats `json:"spool,omitempty"`
	ActiveModels []store.ModelRef  `json:"active_models,omitempty"`
	ModelStatus  []modelStatus     `json:"model_status,omitempty"`
	Calibration  []calibration     `json:"calibration,omitempty"`
	SeenAgo      string            `json:"seen_ago,omitempty"`
}

// calibration is a sensor's per-sensor calibration of one feature set's
// model, from the counters the agent reports (agent/detect/calibration.go).
type calibration struct {
	FeatureSet string `json:"feature_set"`
	// Calibrated is false while the model observes local traffic.
	Calibrated     bool    `json:"calibrated"`
	ModelThreshold float64 `json:"model_threshold"`
	LocalQuantile  float64 `json:"local_quantile,omitempty"`
	Samples        uint64  `json:"samples,omitempty"`
	// Threshold is the active one: the larger of the model's and the local quantile.
	Threshold float64 `json:"threshold"`
}

// calibrations reads the calibration counters, by feature set.
func calibrations(c map[string]uint64) []calibration {
	var out []calibration
	for k, v := range c {
		set, ok := strings.CutPrefix(k, "calibrated_")
		if !ok || set == "" {
			continue
		}
		out = append(out, calibration{FeatureSet: set, Calibrated: v == 1,
			ModelThreshold: float64(c["model_threshold_micro_"+set]) / 1e6,
			LocalQuantile:  float64(c["calibration_local_micro_"+set]) / 1e6,
			Samples:        c["calibration_samples_"+set],
			Threshold:      float64(c["threshold_micro_"+set]) / 1e6})
	}
	slices.SortFunc(out, func(a, b calibration) int { return strings.Compare(a.FeatureSet, b.FeatureSet) })
	return out
}

type modelStatus struct {
	RolloutID string `json:"rollout_id,omitempty"`
	Digest    string `json:"digest,omitempty"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
}

// reportedState is the part of the stored agent state that health reads.
// The raw status is protojson (lowerCamelCase names), accepted in both
// spellings.
type reportedState struct {
	Spool        *store.SpoolStats `json:"spool"`
	ActiveModels []store.ModelRef  `json:"active_models"`
	Status       struct {
		ModelStatus  []rawModelStatus `json:"modelStatus"`
		ModelStatus2 []rawModelStatus `json:"model_status"`
	} `json:"status"`
}

type rawModelStatus struct {
	RolloutID  string `json:"rolloutId"`
	RolloutID2 string `json:"rollout_id"`
	Digest     string `json:"digest"`
	State      string `json:"state"`
	Reason     string `json:"reason"`
}

// Counters whose growth means the sensor is losing data (agent/detect,
// agent/filedetect and agent/uplink name them):
//   - packets: kernel_drops, events_lost, plugin_restarts, decode_errors;
//   - file events: file_events_lost, file_plugin_restarts, watch_dropped,
//     watch_overflows (the kernel's queue overflowed: events lost, a rescan
//     follows);
//   - anomalies: plugin_anomalies_refused, file_plugin_anomalies_refused
//     (answers no sound plugin sends, refused by the agent's check: the
//     anomalies they carried may have been real);
//   - findings: *_append_errors (the spool could not be written, the
//     findings wait in memory), *_findings_lost (and dropped from there),
//     uplink_findings_refused (dropped after the server refused each alone),
//     spool_corrupt_files (damaged spool files the agent moved aside, with
//     the findings that waited in them).
var lossCounters = []string{"kernel_drops", "events_lost", "plugin_restarts", "decode_errors",
	"file_events_lost", "file_plugin_restarts", "watch_dropped", "watch_overflows",
	"netflow_append_errors", "netflow_findings_lost", "file_append_errors", "file_findings_lost",
	"plugin_anomalies_refused", "file_plugin_anomalies_refused",
	"uplink_findings_refused", "spool_corrupt_files", "uplink_model_status_dropped", "uplink_model_status_corrupt_files"}

// agentHealth judges an agent from what it last reported.
func agentHealth(a store.Agent, now time.Time, offlineAfter time.Duration) health {
	h := health{Status: HealthOK}
	worse := func(level, problem string) {
		if healthRank[level] > healthRank[h.Status] {
			h.Status = level
		}
		h.Problems = append(h.Problems, problem)
	}
	var st reportedState
	if len(a.State) > 0 {
		_ = json.Unmarshal(a.State, &st) // stored by us; a bad one just tells less
	}
	h.Spool, h.ActiveModels = st.Spool, st.ActiveModels
	for _, m := range append(st.Status.ModelStatus, st.Status.ModelStatus2...) {
		ms := modelStatus{RolloutID: m.RolloutID + m.RolloutID2, Digest: m.Digest, State: m.State, Reason: m.Reason}
		h.ModelStatus = append(h.ModelStatus, ms)
		if m.State == "rejected" || m.State == "rolled_back" {
			worse(HealthWarning, fmt.Sprintf("model %s %s: %s", shortDigest(m.Digest), m.State, m.Reason))
		}
	}
	switch {
	case a.Revoked():
		h.Status, h.Problems = HealthRevoked, []string{"revoked " + a.RevokedAt.Format(time.RFC3339)}
		h.Rank = healthRank[h.Status]
		return h
	case a.LastSeen.IsZero():
		worse(HealthUnknown, "never connected")
	default:
		ago := now.Sub(a.LastSeen)
		h.SeenAgo = ago.Truncate(time.Second).String()
		if ago > offlineAfter {
			worse(HealthOffline, "not seen for "+h.SeenAgo)
		}
	}
	if !a.CertNotAfter.IsZero() {
		switch left := a.CertNotAfter.Sub(now); {
		case left <= 0:
			worse(HealthCritical, "certificate expired")
		case left < 3*24*time.Hour:
			worse(HealthWarning, "certificate expires in "+left.Truncate(time.Minute).String())
		}
	}
	if sp := st.Spool; sp != nil {
		if sp.Dropped > 0 {
			worse(HealthWarning, fmt.Sprintf("%d findings dropped (spool full)", sp.Dropped))
		}
		if sp.CapacityBytes > 0 && sp.Bytes*10 >= sp.CapacityBytes*8 {
			worse(HealthWarning, fmt.Sprintf("spool %d%% full", sp.Bytes*100/sp.CapacityBytes))
		}
	}
	h.Calibration = calibrations(a.Counters)
	keys := make([]string, 0, len(a.Counters))
	for k := range a.Counters {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if a.Counters[k] > 0 && slices.Contains(lossCounters, k) {
			worse(HealthWarning, fmt.Sprintf("%s %d", k, a.Counters[k]))
		}
	}
	h.Rank = healthRank[h.Status]
	return h
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
