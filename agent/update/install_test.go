package update

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign/signtest"
)

// hookLoaders calls hook when the updater asks for a loader, which it does after verifying the
// bundle and before staging it.
type hookLoaders struct {
	LoaderMap
	hook func()
}

func (h hookLoaders) Loader(ctx context.Context, detector string) (ModelLoader, func(), error) {
	h.hook()
	return h.LoaderMap.Loader(ctx, detector)
}

// TestInstallStagesTheVerifiedBytes replaces the bundle file after it was verified and before it is
// staged: the staged, activated bundle is the verified one whatever the file became (the file is
// read once), never the replacement.
func TestInstallStagesTheVerifiedBytes(t *testing.T) {
	tests := []struct {
		name    string
		replace func(e *env, path string) // changes the file at path
	}{
		{"unsigned bundle", func(e *env, path string) {
			m := signtest.Manifest("nf", 1, e.now)
			p, err := bundle.WriteFile(e.t.TempDir(), []byte("unsigned model"), &m)
			if err != nil {
				e.t.Fatal(err)
			}
			copyFile(e.t, p, path)
		}},
		{"another signed bundle", func(e *env, path string) { copyFile(e.t, e.bundle("nf", 2, nil, "model-2"), path) }},
		{"garbage", func(e *env, path string) { writeFile(e.t, path, []byte("garbage")) }},
		{"removed", func(e *env, path string) {
			if err := os.Remove(path); err != nil {
				e.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			signed := e.bundle("nf", 1, nil, "model-1")
			want, err := os.ReadFile(signed)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "offered.vgb")
			writeFile(t, path, want)
			u := e.updater(nil)
			u.cfg.Loaders = hookLoaders{LoaderMap: LoaderMap{"netflow": e.loader}, hook: func() { tt.replace(e, path) }}

			res, err := u.Install(context.Background(), Request{Path: path})
			if err != nil || res.State != StateActive {
				t.Fatalf("install: %+v %v", res, err)
			}
			staged, err := os.ReadFile(res.Path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(staged, want) {
				t.Fatal("the staged bundle is not the verified one")
			}
			if d, _ := FileDigest(signed); res.Digest != d {
				t.Fatalf("digest %s, want the verified bundle's %s", res.Digest, d)
			}
			a, ok := u.Active("netflow", "netflow/v1")
			if !ok || a.Path != res.Path || a.Manifest.Version != 1 || e.loader.loaded() != res.Path {
				t.Fatalf("active %+v %v, plugin runs %s", a, ok, e.loader.loaded())
			}
		})
	}
}

// TestInstallRefusesOversizedBundle: a file larger than the bundle size limit is refused before it
// is read into memory.
func TestInstallRefusesOversizedBundle(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "big.vgb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(bundle.DefaultLimits().MaxTotal + 1); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	_, err = e.updater(nil).Install(context.Background(), Request{Path: path})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRejected || !strings.Contains(rej.Reason, "larger than the limit of 67108864 bytes") {
		t.Fatalf("err = %v, want a rejection naming the size limit", err)
	}
}

// TestHealthFailureWithoutPrevious: a model failing its health check in a slot without a previous
// model is replaced in the plugin by the installed baseline (Config.Baseline) and reported
// rolled_back; when nothing can be loaded back it is reported rejected with ErrNotRestored, never
// rolled_back. Nothing is activated, and the failed bundle is not kept.
func TestHealthFailureWithoutPrevious(t *testing.T) {
	tests := []struct {
		name      string
		baseline  bool
		loseBase  bool // the baseline file vanishes before the rollback
		wantState string
		wantIn    string
	}{
		{"baseline restored", true, false, StateRolledBack, "rolled back to base-1.vgb"},
		{"no baseline", false, false, StateRejected, "no previous or baseline model to roll back to"},
		{"baseline reload fails", true, true, StateRejected, "reloading the previous model base-1.vgb failed too"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			base := e.bundle("base", 1, nil, "model-base")
			u := e.updater(func(s Step) error {
				if s == StepLoaded && tt.loseBase {
					return os.Remove(base)
				}
				return nil
			})
			if tt.baseline {
				u.cfg.Baseline = func(detector, featureSet string) string {
					if detector == "netflow" && featureSet == "netflow/v1" {
						return base
					}
					return ""
				}
				// The pipeline runs its baseline.
				if _, err := e.loader.LoadModel(context.Background(), base); err != nil {
					t.Fatal(err)
				}
			}
			res, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "NaN model")})
			var rej *Rejection
			if !errors.As(err, &rej) || rej.State != tt.wantState || !strings.Contains(rej.Reason, tt.wantIn) {
				t.Fatalf("err = %v, want %s with %q", err, tt.wantState, tt.wantIn)
			}
			if restored := tt.wantState == StateRolledBack; errors.Is(err, ErrNotRestored) == restored {
				t.Fatalf("errors.Is(err, ErrNotRestored) = %v for %v", !restored, err)
			}
			if tt.wantState == StateRolledBack && e.loader.loaded() != base {
				t.Fatalf("plugin runs %s, want the baseline %s", e.loader.loaded(), base)
			}
			if a, ok := u.Active("netflow", "netflow/v1"); ok {
				t.Fatalf("a model failing its health check was activated: %+v", a)
			}
			if _, err := os.Stat(res.Path); !os.IsNotExist(err) {
				t.Fatalf("failed bundle kept: %v", err)
			}
		})
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, b)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
