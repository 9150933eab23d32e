package update

import (
	"context"
	"os"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestShadowNeverRemovesAnActiveBundle: the bundle of a shadow model is a copy of its own. Stopping
// the shadow model (withdrawn, replaced) after the same bundle was activated leaves the active
// bundle in place, and re-offering the running shadow bundle under a new rollout leaves the new
// shadow model its bundle.
func TestShadowNeverRemovesAnActiveBundle(t *testing.T) {
	type step func(e *env, u *Updater, sl *shadowLoader, v2 string)
	shadow := func(rollout string) step {
		return func(e *env, u *Updater, _ *shadowLoader, path string) {
			res, err := u.Install(context.Background(), Request{Path: path, Shadow: true, RolloutID: rollout})
			if err != nil || res.State != StateShadow {
				e.t.Fatalf("shadow %s: %+v %v", rollout, res, err)
			}
		}
	}
	activate := func(e *env, u *Updater, _ *shadowLoader, path string) { install(e.t, u, path) }
	withdraw := func(rollout string) step {
		return func(_ *env, u *Updater, _ *shadowLoader, _ string) {
			u.processWithdrawal(context.Background(), &wirev1.ModelWithdrawal{RolloutId: rollout, Reason: "halted"})
		}
	}
	shadowV3 := func(e *env, u *Updater, sl *shadowLoader, _ string) {
		shadow("s3")(e, u, sl, e.bundle("nf", 3, nil, "model-3"))
	}
	tests := []struct {
		name       string
		steps      []step
		wantActive uint64 // active version at the end
		wantShadow string // rollout of the shadow model running at the end ("" = none)
	}{
		{"promoted then withdrawn", []step{shadow("s1"), activate, withdraw("s1")}, 2, ""},
		{"promoted then replaced by another shadow", []step{shadow("s1"), activate, shadowV3}, 2, "s3"},
		{"re-offered under a new rollout", []step{shadow("s1"), shadow("s2")}, 1, "s2"},
		{"re-offered, then withdrawn, then promoted", []step{shadow("s1"), shadow("s2"), withdraw("s2"), activate}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sl := &shadowLoader{fakeLoader: e.loader}
			u := e.updater(nil)
			u.cfg.Loaders = LoaderMap{"netflow": sl}
			install(t, u, e.bundle("nf", 1, nil, "model-1"))
			v2 := e.bundle("nf", 2, nil, "model-2")
			for _, s := range tt.steps {
				s(e, u, sl, v2)
			}

			a, ok := u.Active("netflow", "netflow/v1")
			if !ok || a.Manifest.Version != tt.wantActive {
				t.Fatalf("active %+v %v, want version %d", a, ok, tt.wantActive)
			}
			if _, err := e.loader.LoadModel(context.Background(), a.Path); err != nil {
				t.Fatalf("active bundle does not load: %v", err)
			}
			rid, _, on := u.ShadowRunning()
			if !on {
				rid = ""
			}
			if rid != tt.wantShadow {
				t.Fatalf("shadow model of rollout %q running, want %q", rid, tt.wantShadow)
			}
			if on {
				if _, err := os.Stat(sl.shadow); err != nil {
					t.Fatalf("bundle of the running shadow model: %v", err)
				}
				if sl.shadow == a.Path {
					t.Fatal("the shadow model runs the active bundle's file")
				}
			}
		})
	}
}

// TestRemoveStaleShadows: the shadow bundle that an agent restart leaves behind is removed when
// the agent starts again (a new Updater on the same state), the active bundle stays, and an
// Updater whose own shadow model runs refuses to remove it.
func TestRemoveStaleShadows(t *testing.T) {
	e := newEnv(t)
	sl := &shadowLoader{fakeLoader: e.loader}
	u := e.updater(nil)
	u.cfg.Loaders = LoaderMap{"netflow": sl}
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	res, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "model-2"), Shadow: true, RolloutID: "s1"})
	if err != nil || res.State != StateShadow {
		t.Fatalf("shadow: %+v %v", res, err)
	}
	if err := u.RemoveStaleShadows(); err == nil {
		t.Fatal("RemoveStaleShadows removed the bundle of a running shadow model")
	}
	if _, err := os.Stat(res.Path); err != nil {
		t.Fatalf("running shadow bundle: %v", err)
	}

	// The agent restarts: the new Updater runs no shadow model.
	u2 := e.updater(nil)
	if _, err := u2.Recover(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(res.Path); err != nil {
		t.Fatalf("Recover removed the shadow bundle (the update command runs it too): %v", err)
	}
	if err := u2.RemoveStaleShadows(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(res.Path); !os.IsNotExist(err) {
		t.Fatalf("stale shadow bundle still there: %v", err)
	}
	a, ok := u2.Active("netflow", "netflow/v1")
	if !ok || a.Manifest.Version != 1 {
		t.Fatalf("active %+v %v, want version 1", a, ok)
	}
	if _, err := os.Stat(a.Path); err != nil {
		t.Fatalf("active bundle: %v", err)
	}
	if err := u2.RemoveStaleShadows(); err != nil { // nothing left: no error
		t.Fatal(err)
	}
}
