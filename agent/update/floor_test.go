package update

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
)

// TestVersionFloor: once version 2 was active in a slot, an older signed bundle needs a signed
// rollback instruction even when the active bundle is gone (its file deleted, its pointer removed
// by Recover, or the state written before floors existed), while the bundle that set the floor and
// newer versions are still accepted.
func TestVersionFloor(t *testing.T) {
	const floorReason = "version 1 is not greater than version 2, the highest activated for netflow/v1 on this agent"
	removeActive := func(e *env, u *Updater) {
		a, ok := u.Active("netflow", "netflow/v1")
		if !ok {
			e.t.Fatal("no active model")
		}
		if err := os.Remove(a.Path); err != nil {
			e.t.Fatal(err)
		}
	}
	removeAll := func(e *env, u *Updater) {
		files, _ := filepath.Glob(filepath.Join(u.detectorDir("netflow"), "*"+bundle.Extension))
		for _, f := range files {
			if err := os.Remove(f); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	recoverState := func(e *env, _ *Updater) {
		if _, err := e.updater(nil).Recover(); err != nil {
			e.t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		lose  []func(e *env, u *Updater) // what happens after v1 then v2 were activated
		offer func(e *env, v1, v2 string) Request
		want  string // "" = activated
	}{
		{"v1 replayed, active file deleted", []func(*env, *Updater){removeActive},
			func(_ *env, v1, _ string) Request { return Request{Path: v1} }, floorReason},
		{"v1 replayed, pointer removed by Recover", []func(*env, *Updater){removeAll, recoverState},
			func(_ *env, v1, _ string) Request { return Request{Path: v1} }, floorReason},
		{"v1 replayed, state from before version floors", []func(*env, *Updater){
			func(e *env, u *Updater) {
				if err := os.Remove(filepath.Join(u.detectorDir("netflow"), floorPrefix+"netflow-v1")); err != nil {
					e.t.Fatal(err)
				}
			},
			recoverState, removeAll},
			func(_ *env, v1, _ string) Request { return Request{Path: v1} }, floorReason},
		{"another v2, active file deleted", []func(*env, *Updater){removeActive},
			func(e *env, _, _ string) Request { return Request{Path: e.bundle("nf", 2, nil, "model-2b")} }, "not greater than version 2"},
		{"the same v2 again, active file deleted", []func(*env, *Updater){removeActive},
			func(_ *env, _, v2 string) Request { return Request{Path: v2} }, ""},
		{"v3, active file deleted", []func(*env, *Updater){removeActive},
			func(e *env, _, _ string) Request { return Request{Path: e.bundle("nf", 3, nil, "model-3")} }, ""},
		{"v1 with a rollback instruction, active file deleted", []func(*env, *Updater){removeActive},
			func(e *env, v1, _ string) Request {
				b, err := bundle.Read(v1, bundle.DefaultLimits())
				if err != nil {
					e.t.Fatal(err)
				}
				instr, err := rollback.Sign(rollback.For(&b.Manifest, e.now, time.Hour, "v2 noisy"), e.a)
				if err != nil {
					e.t.Fatal(err)
				}
				return Request{Path: v1, Rollback: instr}
			}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			u := e.updater(nil)
			v1 := e.bundle("nf", 1, nil, "model-1")
			v2 := e.bundle("nf", 2, nil, "model-2")
			install(t, u, v1)
			install(t, u, v2)
			for _, f := range tt.lose {
				f(e, u)
			}
			req := tt.offer(e, v1, v2)
			u = e.updater(nil) // possibly another process (`vigil-agent update`)
			res, err := u.Install(context.Background(), req)
			if tt.want != "" {
				var rej *Rejection
				if !errors.As(err, &rej) || rej.State != StateRejected || !strings.Contains(rej.Reason, tt.want) {
					t.Fatalf("err = %v, want a rejection with %q", err, tt.want)
				}
				return
			}
			if err != nil || res.State != StateActive {
				t.Fatalf("install: %+v %v", res, err)
			}
			if a, ok := u.Active("netflow", "netflow/v1"); !ok || a.Digest != res.Digest {
				t.Fatalf("active %+v %v, want %s", a, ok, res.Digest)
			}
		})
	}
}

// TestVersionAboveBaseline: an agent on its installed baseline (no model ever activated) refuses
// an older signed bundle without a signed rollback instruction.
func TestVersionAboveBaseline(t *testing.T) {
	e := newEnv(t)
	base := e.bundle("base", 3, nil, "model-base")
	u := e.updater(nil)
	u.cfg.Baseline = func(detector, featureSet string) string { return base }
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "model-2")})
	var rej *Rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "version 2 is not greater than the installed baseline version 3") {
		t.Fatalf("err = %v, want a rejection naming the baseline version", err)
	}
	install(t, u, e.bundle("nf", 4, nil, "model-4"))
}
