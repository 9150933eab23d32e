package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Shadow mode: a rollout may ask canary agents to run the offered model beside the active one.
// The model goes through the same verification and staging, then ShadowLoader.LoadShadow (for
// the packet pipeline: a second instance of the detector plugin fed the same packets, see
// agent/detect), never producing findings. The pipeline feeds ObserveShadow with both models'
// statistics over the same stretches of events; ShadowReport summarises them and the agent sends
// the summary periodically as a ModelStatus with state "shadow" whose Reason is the JSON of
// ShadowSummary, so the release engineer sees in `vigilctl rollout status` how many anomalies the
// new model would have raised compared with the active one, and the server can halt a rollout
// whose shadow model alerts too often (server/registry, docs/rollouts.md). The server stops a
// shadow model with a ModelWithdrawal (HandleWithdrawal); a new shadow rollout replaces it.
// The shadow runs in memory only: after an agent restart no shadow model runs. Its bundle is a
// copy of its own in <state>/models/<detector>/shadow/ (never a file a pointer names, even when
// the same bundle is or becomes active), removed when the shadow model stops or, left by a
// restart, when the agent starts again (RemoveStaleShadows) or the next one starts.

// ShadowSummary compares the active and the shadow model over the same events, cumulated since
// the shadow model started.
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
	MaxP90    float32 `json:"max_p90"`
	MaxP99    float32 `json:"max_p99"`
	Max       float32 `json:"max"`
}

func (m *ModelStats) add(s sdk.Stats) {
	m.Events += s.Count
	m.Anomalies += s.Anomalies
	m.MaxP50 = max(m.MaxP50, finiteOr0(s.P50))
	m.MaxP90 = max(m.MaxP90, finiteOr0(s.P90))
	m.MaxP99 = max(m.MaxP99, finiteOr0(s.P99))
	m.Max = max(m.Max, finiteOr0(s.Max))
}

// finiteOr0 keeps NaN and infinities out of the JSON summary (encoding/json refuses them).
func finiteOr0(v float32) float32 {
	if !finite(v) {
		return 0
	}
	return v
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

// ShadowRunning returns the rollout and model of the running shadow model.
func (u *Updater) ShadowRunning() (rolloutID string, ref *wirev1.ModelRef, ok bool) {
	u.shadow.mu.Lock()
	defer u.shadow.mu.Unlock()
	return u.shadow.rolloutID, u.shadow.ref, u.shadow.on
}

// ObserveShadow adds one stretch of events scored by both models.
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
	// The lock is held until the report is sent (Config.Report does not block): a stopShadow in
	// between would report "withdrawn" first, and this stale "shadow" would be the server's
	// last word on the rollout.
	u.shadow.mu.Lock()
	defer u.shadow.mu.Unlock()
	if !u.shadow.on {
		return ShadowSummary{}, false
	}
	sum, rid, ref := u.shadow.sum, u.shadow.rolloutID, u.shadow.ref
	b, err := json.Marshal(sum)
	if err != nil {
		u.log.Error("encode shadow summary", "err", err)
		return sum, true
	}
	u.reportStatus(&wirev1.ModelStatus{RolloutId: rid, Model: ref, State: StateShadow, Reason: string(b), TimeUnixNano: u.cfg.Now().UnixNano()})
	return sum, true
}

// stopShadow stops the running shadow model (if any) through its detector's loader, removes its
// bundle (its own copy in <detector>/shadow/, which no pointer can name, even when the same bundle
// is active) and reports it withdrawn with reason. The caller holds u.mu and the state lock.
func (u *Updater) stopShadow(ctx context.Context, reason string) bool {
	u.shadow.mu.Lock()
	on, rid, ref, path, sum := u.shadow.on, u.shadow.rolloutID, u.shadow.ref, u.shadow.path, u.shadow.sum
	u.shadow.on, u.shadow.path = false, ""
	u.shadow.mu.Unlock()
	if !on {
		return false
	}
	if l, release, err := u.cfg.Loaders.Loader(ctx, ref.Detector); err != nil {
		u.log.Warn("stop shadow model: no loader", "detector", ref.Detector, "err", err)
	} else {
		if sl, ok := l.(ShadowLoader); ok {
			if err := sl.StopShadow(ctx); err != nil {
				u.log.Warn("stop shadow model", "err", err)
			}
		}
		release()
	}
	if path != "" {
		_ = os.Remove(path)
	}
	final, _ := json.Marshal(sum)
	u.log.Info("shadow model stopped", "rollout", rid, "model", ref.Name, "version", ref.Version, "reason", reason, "summary", string(final))
	u.reportStatus(&wirev1.ModelStatus{RolloutId: rid, Model: ref, State: StateWithdrawn, Reason: reason, TimeUnixNano: u.cfg.Now().UnixNano()})
	return true
}

// CheckWithdrawal validates a withdrawal from the server (outside input).
func CheckWithdrawal(w *wirev1.ModelWithdrawal) bool {
	return w != nil && w.RolloutId != "" && len(w.RolloutId) <= 128 && len(w.Reason) <= 1024
}

// HandleWithdrawal takes a ModelWithdrawal from the server; it never blocks
// (uplink.Config.OnModelWithdrawal). An offer of that rollout still queued is dropped, and a
// shadow model running it is stopped by Run.
func (u *Updater) HandleWithdrawal(w *wirev1.ModelWithdrawal) {
	if !CheckWithdrawal(w) {
		u.log.Warn("malformed model withdrawal ignored")
		return
	}
	u.queuedMu.Lock()
	if len(u.withdrawn) >= 4096 {
		clear(u.withdrawn) // bounded; the server repeats withdrawals at the next Hello
	}
	u.withdrawn[w.RolloutId] = true
	u.queuedMu.Unlock()
	select {
	case u.withdrawals <- w:
	default:
		u.log.Warn("model withdrawal queue full; the server repeats it at the next connection", "rollout", w.RolloutId)
	}
}

func (u *Updater) isWithdrawn(rolloutID string) bool {
	u.queuedMu.Lock()
	defer u.queuedMu.Unlock()
	return u.withdrawn[rolloutID]
}

// processWithdrawal stops the shadow model of the withdrawn rollout, if it runs.
func (u *Updater) processWithdrawal(ctx context.Context, w *wirev1.ModelWithdrawal) {
	u.mu.Lock()
	defer u.mu.Unlock()
	unlock, err := u.lockState(ctx)
	if err != nil {
		u.log.Warn("model withdrawal not processed; the server repeats it at the next connection", "rollout", w.RolloutId, "err", err)
		return
	}
	defer unlock()
	reason := "rollout withdrawn by the server"
	if w.Reason != "" {
		reason += ": " + w.Reason
	}
	if rid, _, on := u.ShadowRunning(); on && rid == w.RolloutId {
		u.stopShadow(ctx, reason)
		return
	}
	// No shadow model of it runs here: settle the server's record so that it stops repeating
	// the withdrawal. A rollout halted by hand is withdrawn from the agents that had not
	// activated it, and this one may have activated it just before the withdrawal came: it
	// keeps the model (only a rollback rollout takes an agent back) and says so, rather than
	// "withdrawn" over its "active".
	if m := w.GetModel(); m != nil && digestRE.MatchString(m.Digest) && len(m.Name) <= 64 && len(m.Detector) <= 64 {
		ref := &wirev1.ModelRef{Name: m.Name, Version: m.Version, Digest: m.Digest, Detector: m.Detector}
		state, why := StateWithdrawn, reason+" (not installed here)"
		if as, err := ActiveModels(u.cfg.StateDir); err == nil && slices.ContainsFunc(as, func(a Active) bool { return a.Digest == m.Digest }) {
			state, why = StateActive, reason+"; it was already active here and stays (a rollback rollout reverts it)"
		}
		u.reportStatus(&wirev1.ModelStatus{RolloutId: w.RolloutId, State: state, Reason: why, TimeUnixNano: u.cfg.Now().UnixNano(), Model: ref})
	}
}

// RemoveStaleShadows removes the shadow bundles that an earlier run of the agent left in
// <state>/models/<detector>/shadow/: a shadow model runs in memory only, so after a restart none
// runs and its bundle is garbage (before, it stayed until the next shadow rollout started). Only
// the running agent calls it, at start-up and before it processes offers: the `update` command
// must not, since the running agent's shadow bundle is there. It holds the state lock.
func (u *Updater) RemoveStaleShadows() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.shadow.mu.Lock()
	on := u.shadow.on
	u.shadow.mu.Unlock()
	if on {
		return errors.New("remove stale shadow bundles: a shadow model of this agent is running")
	}
	unlock, err := u.lockState(context.Background())
	if err != nil {
		return fmt.Errorf("remove stale shadow bundles: %w", err)
	}
	defer unlock()
	root := filepath.Join(u.cfg.StateDir, ModelsDir)
	dets, err := os.ReadDir(root)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("remove stale shadow bundles: %w", err)
	}
	for _, d := range dets {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(root, d.Name(), shadowDir)
		if _, err := os.Lstat(dir); err != nil {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove stale shadow bundles: %w", err)
		}
		u.log.Info("removed the shadow bundle of an earlier run", "detector", d.Name())
	}
	return nil
}
