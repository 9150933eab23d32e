package registry

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
)

// TestTrustCheckCache: the check of an offer is cached by trust.json's content and the bundle
// file, so many Hellos verify the bundle once; a changed trust.json is seen even when its size
// and mtime are unchanged (a key swapped for another of the same kind), and changing it back
// makes the offer good again.
func TestTrustCheckCache(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	path := filepath.Join(e.dir, TrustFile)
	k2 := signtest.NewSigner(t, sign.AlgEd25519)
	e.trustOnly(e.signer, k2)
	e.publishWith("nf", 2, k2)
	if _, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng"); err != nil {
		t.Fatal(err)
	}
	verifications := func() int {
		e.reg.trust.mu.Lock()
		defer e.reg.trust.mu.Unlock()
		return e.reg.trust.verifications
	}
	snap := func() policySnap { s, _ := e.reg.policy(); return s }
	check := func() offerVerdict {
		ro, err := e.db.ActiveRollouts(ctx)
		if err != nil || len(ro) != 1 {
			t.Fatalf("%v %v", ro, err)
		}
		return e.reg.checkOffer(snap(), ro[0].Model.Name, ro[0].Model.Version, ro[0].Model.Digest, nil).verdict
	}
	base := verifications()
	var wg sync.WaitGroup
	for range 50 { // concurrent checks of one key verify once
		wg.Go(func() {
			if v := check(); v != offerTrusted {
				t.Errorf("verdict %v", v)
			}
		})
	}
	wg.Wait()
	if n := verifications() - base; n != 1 {
		t.Fatalf("%d verifications for 50 checks of one bundle under one policy, want 1", n)
	}

	// Same size, same mtime, other key: trusts e.signer and a new k3 instead of k2.
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	k3 := signtest.NewSigner(t, sign.AlgEd25519)
	e.trustOnly(e.signer, k3)
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		t.Skipf("the policies differ in size (%d, %d)", st.Size(), st2.Size())
	}
	if v := check(); v != offerUntrusted {
		t.Fatalf("after k2 was removed (same size and mtime): %v, want untrusted", v)
	}
	// And back: the bundle verifies again.
	e.trustOnly(e.signer, k2)
	if v := check(); v != offerTrusted {
		t.Fatalf("after k2 was trusted again: %v, want trusted", v)
	}
	base = verifications()
	for range 20 {
		check()
	}
	if n := verifications() - base; n != 0 {
		t.Fatalf("%d verifications of a cached result", n)
	}
	// A trusted result is not kept past the bundle's expiry.
	e.reg.cfg.Now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
	if v := check(); v != offerUntrusted {
		t.Fatalf("after the bundle expired: %v, want untrusted", v)
	}
}

// TestTrustCheckMetrics: a halt by the trust check and the offers it withheld are counted.
func TestTrustCheckMetrics(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	if err := e.reg.metrics.register(reg); err != nil {
		t.Fatal(err)
	}
	e.publish("nf", 2)
	if _, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng"); err != nil {
		t.Fatal(err)
	}
	e.push.connected = []string{"a-1"}
	writeFile(t, filepath.Join(e.dir, TrustFile), []byte("{"))
	e.reg.OnHello("a-1", "alpha", nil)
	e.trustOnly(signtest.NewSigner(t, sign.AlgEd25519))
	e.reg.OnHello("a-1", "alpha", nil)
	e.reg.OnHello("a-1", "alpha", nil) // halted: nothing more to withhold
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	// Once halted, a rollout is counted once, however many passes withheld its offers (the
	// push that follows the policy's recovery may race the Hello).
	if got["vigil_server_rollouts_halted_untrusted_total"] != 1 || got["vigil_server_model_offers_withheld_total/unchecked"] != 1 ||
		got["vigil_server_model_offers_withheld_total/untrusted"] < 1 {
		t.Errorf("metrics %v, want 1 halt, 1 offer withheld unchecked, 1 or more untrusted", got)
	}
}

// BenchmarkOfferCheck: what the trust check adds to a pass that offers a rollout (at every
// Hello of an agent that lacks it): cached, one read and hash of trust.json and one stat of
// the bundle; uncached, the bundle's full verification (a 1 MiB model).
func BenchmarkOfferCheck(b *testing.B) {
	dir := b.TempDir()
	s := signtest.NewSigner(b, sign.AlgEd25519)
	if err := signtest.Policy(b, 1, s).WriteFile(filepath.Join(dir, TrustFile)); err != nil {
		b.Fatal(err)
	}
	model := make([]byte, 1<<20)
	p := signtest.WriteBundle(b, b.TempDir(), model, signtest.Manifest("nf", 2, time.Now().Add(-time.Minute)), s)
	digest, err := bundle.Digest(p)
	if err != nil {
		b.Fatal(err)
	}
	r := New(Config{DataDir: dir, BundleDir: filepath.Join(dir, "bundles")})
	if err := os.MkdirAll(r.cfg.BundleDir, 0o750); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(p, r.bundlePath(digest)); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			snap, _ := r.policy()
			if res := r.checkOffer(snap, "nf", 2, digest, nil); res.verdict != offerTrusted {
				b.Fatal(res.err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		snap, _ := r.policy()
		for b.Loop() {
			if res := r.verifyOffer(snap.pol, r.bundlePath(digest), "nf", 2, digest, nil, time.Now()); res.verdict != offerTrusted {
				b.Fatal(res.err)
			}
		}
	})
}

// TestTrustCheckUncheckedShared: concurrent checks of one key share one verification even when
// its result is "unchecked" (not cached: the next pass tries again). Before, each waiter
// verified the bundle again in turn once the first was done, so a reconnect storm while a
// rollback instruction was "issued in the future" (the server's clock stepped back) verified
// the bundle once per Hello, one after the other, each Hello holding decideMu.
func TestTrustCheckUncheckedShared(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.publish("nf", 1)
	m, err := e.db.ModelByVersion(ctx, "nf", 1)
	if err != nil {
		t.Fatal(err)
	}
	var man bundle.Manifest
	if err := json.Unmarshal(m.Manifest, &man); err != nil {
		t.Fatal(err)
	}
	instr, err := rollback.Sign(rollback.For(&man, time.Now(), time.Hour, "v2 noisy"), e.signer)
	if err != nil {
		t.Fatal(err)
	}
	// The clock stepped back a day: the instruction is issued in the future.
	e.reg.cfg.Now = func() time.Time { return time.Now().Add(-24 * time.Hour) }
	snap, _ := e.reg.policy()
	if snap.err != nil {
		t.Fatal(snap.err)
	}
	verifications := func() int {
		e.reg.trust.mu.Lock()
		defer e.reg.trust.mu.Unlock()
		return e.reg.trust.verifications
	}
	// The first check is held in the verification until every other check waits for it.
	const n = 20
	release := make(chan struct{})
	e.reg.trust.mu.Lock()
	e.reg.trust.beforeVerify = func() { <-release }
	e.reg.trust.mu.Unlock()
	base := verifications()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if res := e.reg.checkOffer(snap, "nf", 1, m.Digest, instr); res.verdict != offerUnchecked {
				t.Errorf("verdict %v (%v), want unchecked", res.verdict, res.err)
			}
		})
	}
	waitFor(t, func() bool {
		e.reg.trust.mu.Lock()
		defer e.reg.trust.mu.Unlock()
		return e.reg.trust.waiting == n-1
	}, "every other check waiting for the first")
	close(release)
	wg.Wait()
	if got := verifications() - base; got != 1 {
		t.Fatalf("%d verifications for %d concurrent checks of one key (unchecked), want 1", got, n)
	}
	// Not cached: the next check tries again.
	e.reg.trust.mu.Lock()
	e.reg.trust.beforeVerify = nil
	e.reg.trust.mu.Unlock()
	e.reg.checkOffer(snap, "nf", 1, m.Digest, instr)
	if got := verifications() - base; got != 2 {
		t.Fatalf("%d verifications after one more check, want 2 (an unchecked result is not cached)", got)
	}
}
