package update

import (
	"encoding/json"
	"sync"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Shadow mode: a rollout may ask canary agents to run the offered model beside the active one.
// The model goes through the same verification and staging, then ShadowLoader.LoadShadow (a
// second model slot or plugin instance, never producing findings). The detector pipeline feeds
// ObserveShadow with the per-batch statistics of both models; ShadowReport summarises them and
// the agent sends the summary as a ModelStatus with state "shadow" whose Reason is the JSON of
// ShadowSummary, so the release engineer sees in `vigilctl rollout status` how many findings the
// new model would have raised compared with the active one.

// ShadowSummary compares the active and the shadow model over the same batches.
type ShadowSummary struct {
	Batches uint64     `json:"batches"`
	Active  ModelStats `json:"active"`
	Shadow  ModelStats `json:"shadow"`
}

// ModelStats accumulates sdk.Stats: counts add up, quantiles are the maximum per batch seen.
type ModelStats struct {
	Events    uint64  `json:"events"`
	Anomalies uint64  `json:"anomalies"`
	MaxP50    float32 `json:"max_p50"`
	MaxP99    float32 `json:"max_p99"`
	Max       float32 `json:"max"`
}

func (m *ModelStats) add(s sdk.Stats) {
	m.Events += s.Count
	m.Anomalies += s.Anomalies
	m.MaxP50 = max(m.MaxP50, s.P50)
	m.MaxP99 = max(m.MaxP99, s.P99)
	m.Max = max(m.Max, s.Max)
}

type shadowState struct {
	mu        sync.Mutex
	on        bool
	rolloutID string
	ref       *wirev1.ModelRef
	path      string
	sum       ShadowSummary
}

func (u *Updater) startShadow(rolloutID string, m *bundle.Manifest, digest, path string) {
	u.shadow.mu.Lock()
	defer u.shadow.mu.Unlock()
	u.shadow.on, u.shadow.rolloutID, u.shadow.path = true, rolloutID, path
	u.shadow.ref = &wirev1.ModelRef{Name: m.Name, Version: m.Version, Digest: digest, Detector: m.Detector}
	u.shadow.sum = ShadowSummary{}
}

func (u *Updater) shadowPath() string {
	u.shadow.mu.Lock()
	defer u.shadow.mu.Unlock()
	return u.shadow.path
}

// ObserveShadow adds one batch scored by both models.
func (u *Updater) ObserveShadow(active, shadow sdk.Stats) {
	u.shadow.mu.Lock()
	defer u.shadow.mu.Unlock()
	if !u.shadow.on {
		return
	}
	u.shadow.sum.Batches++
	u.shadow.sum.Active.add(active)
	u.shadow.sum.Shadow.add(shadow)
}

// ShadowReport sends the current shadow summary as a "shadow" ModelStatus (the agent calls it
// periodically); it returns false when no shadow model runs.
func (u *Updater) ShadowReport() (ShadowSummary, bool) {
	u.shadow.mu.Lock()
	if !u.shadow.on {
		u.shadow.mu.Unlock()
		return ShadowSummary{}, false
	}
	sum, rid, ref := u.shadow.sum, u.shadow.rolloutID, u.shadow.ref
	u.shadow.mu.Unlock()
	b, _ := json.Marshal(sum)
	u.reportStatus(&wirev1.ModelStatus{RolloutId: rid, Model: ref, State: StateShadow, Reason: string(b), TimeUnixNano: u.cfg.Now().UnixNano()})
	return sum, true
}
