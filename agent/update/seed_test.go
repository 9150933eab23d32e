package update

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestSeedPolicy: the shipped policy is copied into a state directory that
// has none, and never over one it has (a rotated policy); a bad seed is an
// error, no seed nothing.
func TestSeedPolicy(t *testing.T) {
	a := signtest.NewSigner(t, sign.AlgEd25519)
	b := signtest.NewSigner(t, sign.AlgECDSAP256)
	seed := filepath.Join(t.TempDir(), "trust.json")
	if err := signtest.Policy(t, 1, a).WriteFile(seed); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "trust.json")
	if err := os.WriteFile(bad, []byte(`{"version":1,"keys":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}

	state := t.TempDir()
	ok, err := SeedPolicy(state, seed)
	if err != nil || !ok {
		t.Fatalf("seed into an empty state: %v, %v", ok, err)
	}
	want, _ := os.ReadFile(seed)
	got, _ := os.ReadFile(filepath.Join(state, TrustFile))
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Fatalf("seeded policy differs:\n%s\nwant\n%s", got, want)
	}
	if st, err := os.Stat(filepath.Join(state, TrustFile)); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("seeded policy: %v %v", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 1 {
		t.Fatalf("state holds %d entries after seeding, want trust.json only", len(ents))
	}

	// A rotated policy in the state directory stays.
	rotated := t.TempDir()
	if err := signtest.Policy(t, 1, b).WriteFile(filepath.Join(rotated, TrustFile)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(rotated, TrustFile))
	if ok, err := SeedPolicy(rotated, seed); ok || err != nil {
		t.Fatalf("seed over a state policy: %v, %v", ok, err)
	}
	if after, _ := os.ReadFile(filepath.Join(rotated, TrustFile)); !bytes.Equal(before, after) {
		t.Fatal("the state's policy was replaced by the seed")
	}

	for _, tc := range []struct {
		name, seed string
		wantErr    bool
	}{
		{"no seed", "", false},
		{"seed absent", filepath.Join(t.TempDir(), "none.json"), false},
		{"invalid seed", bad, true},
	} {
		st := t.TempDir()
		ok, err := SeedPolicy(st, tc.seed)
		if ok || (err != nil) != tc.wantErr {
			t.Errorf("%s: %v, %v (want error %v)", tc.name, ok, err, tc.wantErr)
		}
		if _, err := os.Stat(filepath.Join(st, TrustFile)); !os.IsNotExist(err) {
			t.Errorf("%s: a policy was written", tc.name)
		}
	}
}

// TestUpdaterSeedsPolicy: a packaged agent's state directory has no
// trust.json, only /etc/vigil/trust.json exists (the package's). Nothing
// copied it, so every rollout and `vigil-agent update` was refused ("no
// usable trust policy"). With TrustSeed the first update installs it and
// the bundle signed by its key is activated.
func TestUpdaterSeedsPolicy(t *testing.T) {
	e := newEnv(t)
	seed := filepath.Join(t.TempDir(), "trust.json")
	if err := os.Rename(filepath.Join(e.state, TrustFile), seed); err != nil {
		t.Fatal(err)
	}
	path := e.bundle("nethost", 2, nil, "m2")
	u, err := New(Config{StateDir: e.state, TrustSeed: seed, Loaders: LoaderMap{"netflow": e.loader}, Now: func() time.Time { return e.now },
		Report: func(*wirev1.ModelStatus) {}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := u.Install(context.Background(), Request{Path: path})
	if err != nil || res.State != StateActive {
		t.Fatalf("install with a seeded policy: %+v, %v", res, err)
	}
	// Without a seed the error names where the policy comes from.
	e2 := newEnv(t)
	if err := os.Remove(filepath.Join(e2.state, TrustFile)); err != nil {
		t.Fatal(err)
	}
	_, err = e2.updater(nil).Policy()
	if err == nil || !strings.Contains(err.Error(), DefaultTrustSeed) {
		t.Fatalf("policy without state or seed: %v", err)
	}
}
