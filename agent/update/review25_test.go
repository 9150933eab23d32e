package update

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRecoverNeverRestoresARolledBackModel: after a signed rollback from v2 to v1, the previous
// pointer must not name v2. Recover (and ActiveModels) fall back to the previous bundle when the
// active one is damaged or lost, which brought back the very model the release engineers had
// withdrawn with a signed instruction.
func TestRecoverNeverRestoresARolledBackModel(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	v1 := e.bundle("nf", 1, nil, "model-1")
	install(t, u, v1)
	install(t, u, e.bundle("nf", 2, nil, "model-2"))
	b1, _ := bundle.Read(v1, bundle.DefaultLimits())
	instr, err := rollback.Sign(rollback.For(&b1.Manifest, e.now, time.Hour, "v2 noisy"), e.a)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := u.Install(context.Background(), Request{Path: v1, Rollback: instr}); err != nil || res.State != StateActive {
		t.Fatalf("signed rollback: %+v %v", res, err)
	}
	a, ok := u.Active("netflow", "netflow/v1")
	if !ok || a.Manifest.Version != 1 {
		t.Fatalf("active after rollback: %+v %v", a, ok)
	}
	// The rolled-back-to bundle is damaged (disk error, a removed file).
	if err := os.WriteFile(a.Path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	act, err := ActiveModels(e.state)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range act {
		if m.Manifest.Version == 2 {
			t.Fatalf("ActiveModels runs v2, the model a signed rollback instruction withdrew")
		}
	}
	act, err = e.updater(nil).Recover()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range act {
		if m.Manifest.Version == 2 {
			t.Fatalf("Recover reactivated v2, the model a signed rollback instruction withdrew")
		}
	}
	// An upgrade after the rollback keeps the usual previous pointer.
	install(t, e.updater(nil), e.bundle("nf", 3, nil, "model-3"))
	install(t, e.updater(nil), e.bundle("nf", 4, nil, "model-4"))
	if p, _ := readPointer(u.detectorDir("netflow"), previousPrefix+SlotName("netflow/v1")); p == "" {
		t.Fatal("no previous pointer after an upgrade")
	}
}

// TestShadowReportNeverFollowsItsWithdrawal: ShadowReport (the agent's ticker goroutine) took its
// snapshot under the shadow lock and sent it after releasing it. A withdrawal (or a replacing
// shadow rollout) handled by Run in between stopped the shadow model and reported "withdrawn"
// first, and the stale "shadow" summary came after it: the server's last word on the rollout
// said the agent still ran it, so it was offered again at the next Hello (a replaced rollout
// of another model), and `rollout status` showed it running.
func TestShadowReportNeverFollowsItsWithdrawal(t *testing.T) {
	e := newEnv(t)
	sl := &shadowLoader{fakeLoader: e.loader}
	u := e.updater(nil)
	u.cfg.Loaders = LoaderMap{"netflow": sl}
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	if res, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "model-2"), Shadow: true, RolloutID: "s1"}); err != nil || res.State != StateShadow {
		t.Fatalf("shadow: %+v %v", res, err)
	}
	withdrawn := make(chan struct{})
	var once sync.Once
	u.cfg.Report = func(st *wirev1.ModelStatus) {
		if st.State == StateShadow {
			// Run handles a withdrawal of the rollout while the summary is on its way.
			once.Do(func() {
				go func() {
					u.processWithdrawal(context.Background(), &wirev1.ModelWithdrawal{RolloutId: "s1", Reason: "halted"})
					close(withdrawn)
				}()
				select {
				case <-withdrawn:
				case <-time.After(500 * time.Millisecond):
				}
			})
		}
		e.mu.Lock()
		e.reports = append(e.reports, st)
		e.mu.Unlock()
	}
	if _, ok := u.ShadowReport(); !ok {
		t.Fatal("no shadow model running")
	}
	<-withdrawn
	if _, _, on := u.ShadowRunning(); on {
		t.Fatal("shadow model still running after its withdrawal")
	}
	if st, reason := e.lastState("s1"); st != StateWithdrawn {
		t.Fatalf("last report of the withdrawn shadow rollout: %s %s", st, reason)
	}
}

// TestDowngradeThroughAnotherFeatureSetVersion: the netflow plugin runs one model for every
// version of a feature set's name (one nethost slot for nethost/v1..v7), but the updater kept
// the anti-rollback state per feature set. An old, validly signed bundle of nethost/v6 was
// accepted without a rollback instruction on an agent running a newer nethost/v7 model (its
// nethost/v6 slot had no active model and no floor), and the plugin swapped it in: the
// downgrade that the version floor and the signed rollback instructions exist to prevent.
func TestDowngradeThroughAnotherFeatureSetVersion(t *testing.T) {
	e := newEnv(t)
	e.loader.info.FeatureSets = []string{"netflow/v1", "nethost/v7", "nethost/v6"}
	u := e.updater(nil)
	set := func(fs string) func(*bundle.Manifest) { return func(m *bundle.Manifest) { m.FeatureSet = fs } }
	install(t, u, e.bundle("nethost", 9, set("nethost/v7"), "model-9"))

	old := e.bundle("nethost", 8, set("nethost/v6"), "model-8")
	_, err := u.Install(context.Background(), Request{Path: old})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRejected || !strings.Contains(rej.Reason, "rollback instruction") {
		t.Fatalf("old nethost/v6 bundle over an active nethost/v7 v9: %v (plugin runs %s)", err, e.loader.loaded())
	}
	if got := e.loader.model; got.Version != 9 {
		t.Fatalf("the plugin runs %+v", got)
	}
	// Another name's feature sets are not concerned.
	install(t, u, e.bundle("nf", 1, nil, "netflow-model-1"))
	// A signed rollback instruction allows it.
	b8, _ := bundle.Read(old, bundle.DefaultLimits())
	instr, err := rollback.Sign(rollback.For(&b8.Manifest, e.now, time.Hour, "v9 noisy"), e.a)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := u.Install(context.Background(), Request{Path: old, Rollback: instr}); err != nil || res.State != StateActive {
		t.Fatalf("signed rollback to nethost/v6 v8: %+v %v", res, err)
	}
	// A newer version of any nethost feature set is an ordinary upgrade.
	install(t, u, e.bundle("nethost", 10, set("nethost/v6"), "model-10"))
	install(t, u, e.bundle("nethost", 11, set("nethost/v7"), "model-11"))
}

// TestDowngradeBelowAnotherFeatureSetVersionsBaseline: on an agent that runs its installed
// nethost/v7 baseline (no update activated yet, so no floor), an old signed nethost/v6 bundle
// replaced it without a rollback instruction: the baseline check looked at nethost/v6 only.
func TestDowngradeBelowAnotherFeatureSetVersionsBaseline(t *testing.T) {
	e := newEnv(t)
	e.loader.info.FeatureSets = []string{"netflow/v1", "nethost/v7", "nethost/v6"}
	set := func(fs string) func(*bundle.Manifest) { return func(m *bundle.Manifest) { m.FeatureSet = fs } }
	base := e.bundle("nethost", 9, set("nethost/v7"), "model-9")
	u := e.updater(nil)
	u.cfg.Baseline = func(detector, featureSet string) string {
		if featureSet == "nethost/v7" {
			return base
		}
		return ""
	}
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nethost", 8, set("nethost/v6"), "model-8")})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRejected || !strings.Contains(rej.Reason, "nethost/v7") {
		t.Fatalf("old nethost/v6 bundle over the nethost/v7 v9 baseline: %v", err)
	}
	install(t, u, e.bundle("nethost", 10, set("nethost/v6"), "model-10"))
}

// TestOneActiveModelPerFeatureSetName: the plugin runs one model for every version of a feature
// set's name, but a model activated for nethost/v6 left the active pointer of nethost/v7 in
// place. ActiveModels listed both, the pipeline loaded both at the next start, and the plugin ran
// the one loaded last (nethost/v7, sorted after nethost/v6): the older model came back at every
// restart, and Hello reported both as running.
func TestOneActiveModelPerFeatureSetName(t *testing.T) {
	e := newEnv(t)
	e.loader.info.FeatureSets = []string{"netflow/v1", "nethost/v7", "nethost/v6"}
	u := e.updater(nil)
	set := func(fs string) func(*bundle.Manifest) { return func(m *bundle.Manifest) { m.FeatureSet = fs } }
	install(t, u, e.bundle("nethost", 9, set("nethost/v7"), "model-9"))
	install(t, u, e.bundle("nf", 1, nil, "netflow-model-1"))
	install(t, u, e.bundle("nethost", 10, set("nethost/v6"), "model-10"))
	check := func(want map[string]uint64) {
		t.Helper()
		act, err := ActiveModels(e.state)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, a := range act {
			got[a.FeatureSet] = a.Manifest.Version
		}
		if len(got) != len(want) {
			t.Fatalf("active models %v, want %v", got, want)
		}
		for fs, v := range want {
			if got[fs] != v {
				t.Fatalf("active models %v, want %v", got, want)
			}
		}
	}
	check(map[string]uint64{"netflow/v1": 1, "nethost/v6": 10})
	if _, err := e.updater(nil).Recover(); err != nil {
		t.Fatal(err)
	}
	check(map[string]uint64{"netflow/v1": 1, "nethost/v6": 10})
}

// TestHealthFailureRestoresAnotherFeatureSetVersion: a model of nethost/v6 that failed its
// health check on an agent running a nethost/v7 model was "rolled back" to the nethost/v6 slot's
// own previous model or baseline only. With neither, nothing was loaded back: the plugin kept
// running the broken model (its one nethost model) until the agent restarted.
func TestHealthFailureRestoresAnotherFeatureSetVersion(t *testing.T) {
	e := newEnv(t)
	e.loader.info.FeatureSets = []string{"netflow/v1", "nethost/v7", "nethost/v6"}
	u := e.updater(nil)
	set := func(fs string) func(*bundle.Manifest) { return func(m *bundle.Manifest) { m.FeatureSet = fs } }
	install(t, u, e.bundle("nethost", 9, set("nethost/v7"), "model-9"))
	was := e.loader.loaded()
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nethost", 10, set("nethost/v6"), "model-10-NaN")})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRolledBack {
		t.Fatalf("broken nethost/v6 model: %v", err)
	}
	if got := e.loader.loaded(); got != was {
		t.Fatalf("the plugin runs %s, want the nethost/v7 model %s back", got, was)
	}
	act, err := ActiveModels(e.state)
	if err != nil || len(act) != 1 || act[0].FeatureSet != "nethost/v7" || act[0].Manifest.Version != 9 {
		t.Fatalf("active models %+v %v", act, err)
	}
	install(t, u, e.bundle("nethost", 11, set("nethost/v6"), "model-11"))

	// On a fresh agent that runs its installed nethost/v7 baseline, the baseline is loaded back.
	e2 := newEnv(t)
	e2.loader.info.FeatureSets = e.loader.info.FeatureSets
	base := e2.bundle("nethost", 9, set("nethost/v7"), "model-9")
	u2 := e2.updater(nil)
	u2.cfg.Baseline = func(_, featureSet string) string {
		if featureSet == "nethost/v7" {
			return base
		}
		return ""
	}
	_, err = u2.Install(context.Background(), Request{Path: e2.bundle("nethost", 10, set("nethost/v6"), "model-10-NaN")})
	if !errors.As(err, &rej) || rej.State != StateRolledBack || e2.loader.loaded() != base {
		t.Fatalf("broken nethost/v6 model over the nethost/v7 baseline: %v; the plugin runs %s", err, e2.loader.loaded())
	}
}
