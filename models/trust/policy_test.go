package trust_test

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/models/trust"
)

func TestPolicyValidate(t *testing.T) {
	a := signtest.NewSigner(t, sign.AlgECDSAP256)
	b := signtest.NewSigner(t, sign.AlgEd25519)
	base := signtest.Policy(t, 1, a, b)
	mut := func(f func(p *trust.Policy)) trust.Policy {
		p := base
		p.Keys = slices.Clone(base.Keys)
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		p    trust.Policy
		ok   bool
	}{
		{"valid", base, true},
		{"threshold 2 of 2", mut(func(p *trust.Policy) { p.Threshold = 2 }), true},
		{"threshold 0", mut(func(p *trust.Policy) { p.Threshold = 0 }), false},
		{"threshold above keys", mut(func(p *trust.Policy) { p.Threshold = 3 }), false},
		{"no keys", trust.Policy{Threshold: 1}, false},
		{"duplicate id", mut(func(p *trust.Policy) { p.Keys = append(p.Keys, p.Keys[0]) }), false},
		{"id does not match key", mut(func(p *trust.Policy) { p.Keys[0].ID = p.Keys[1].ID }), false},
		{"id not hex", mut(func(p *trust.Policy) { p.Keys[0].ID = strings.ToUpper(p.Keys[0].ID) }), false},
		{"bad pem", mut(func(p *trust.Policy) {
			p.Keys[0].PublicKeyPEM = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
		}), false},
		{"long comment", mut(func(p *trust.Policy) { p.Keys[0].Comment = strings.Repeat("x", 300) }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, trust.ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
		})
	}
	// An invalid policy verifies nothing.
	bad := mut(func(p *trust.Policy) { p.Threshold = 0 })
	if _, err := bad.Verify(signEnv(t, unsigned(t, []byte("m")), a), now); !errors.Is(err, trust.ErrInvalidPolicy) {
		t.Fatalf("verify with invalid policy: %v", err)
	}
}

func TestPolicyLoadWrite(t *testing.T) {
	dir := t.TempDir()
	a := signtest.NewSigner(t, sign.AlgECDSAP256)
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	p := signtest.Policy(t, 1, a)
	p.Keys[0].Expires = &exp
	p.Keys[0].Comment = "release key 2026"
	path := filepath.Join(dir, trust.FileName)
	if err := p.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := trust.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Threshold != 1 || got.Version != 1 || len(got.Keys) != 1 || !got.Keys[0].Expires.Equal(exp) || got.Keys[0].Comment != p.Keys[0].Comment {
		t.Fatalf("round trip: %+v", got)
	}

	// Threshold absent means 1; unknown fields and trailing data are refused.
	raw := map[string]any{"version": 3, "keys": []any{map[string]any{"id": a.KeyID(), "public_key": p.Keys[0].PublicKeyPEM}}}
	b, _ := json.Marshal(raw)
	if q, err := trust.ParsePolicy(b); err != nil || q.Threshold != 1 {
		t.Fatalf("default threshold: %+v %v", q, err)
	}
	raw["extra"] = true
	b, _ = json.Marshal(raw)
	if _, err := trust.ParsePolicy(b); err == nil {
		t.Fatal("unknown field accepted")
	}
	delete(raw, "extra")
	b, _ = json.Marshal(raw)
	if _, err := trust.ParsePolicy(append(b, []byte(`{}`)...)); err == nil {
		t.Fatal("trailing data accepted")
	}
	if _, err := trust.Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if got := p.KeyIDs(); !slices.Equal(got, []string{a.KeyID()}) {
		t.Fatalf("KeyIDs %v", got)
	}
}

var updateTestdata = flag.Bool("update", false, "rewrite testdata/trust.json with fresh example keys")

func TestTestdataPolicy(t *testing.T) {
	// testdata/trust.json is a documented example (regenerate: go test -run TestTestdataPolicy -update);
	// it must stay loadable.
	path := filepath.Join("testdata", "trust.json")
	if *updateTestdata {
		a := signtest.NewSigner(t, sign.AlgECDSAP256)
		b := signtest.NewSigner(t, sign.AlgEd25519)
		c := signtest.NewSigner(t, sign.AlgECDSAP256)
		p := signtest.Policy(t, 2, a, b, c)
		exp := time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)
		p.Keys[0].Comment = "CERT release key A (HSM 1)"
		p.Keys[1].Comment = "CERT release key B (offline laptop)"
		p.Keys[2].Comment = "CERT release key C, retiring"
		p.Keys[2].Expires = &exp
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := p.WriteFile(path); err != nil {
			t.Fatal(err)
		}
	}
	p, err := trust.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Threshold != 2 || len(p.Keys) != 3 {
		t.Fatalf("example policy: threshold %d, %d keys", p.Threshold, len(p.Keys))
	}
}

func update(t *testing.T, next trust.Policy, signers ...*sign.Signer) []byte {
	t.Helper()
	env, err := trust.NewUpdate(next)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range signers {
		if err := sign.SignEnvelope(env, s); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRotation: add the new key (signed by the old), sign with both, remove the old.
func TestRotation(t *testing.T) {
	oldK := signtest.NewSigner(t, sign.AlgECDSAP256)
	newK := signtest.NewSigner(t, sign.AlgEd25519)
	evil := signtest.NewSigner(t, sign.AlgEd25519)
	v1 := signtest.Policy(t, 1, oldK)

	v2 := signtest.Policy(t, 1, oldK, newK)
	v2.Version = 2
	v3 := signtest.Policy(t, 1, newK)
	v3.Version = 3

	// Refusals from v1.
	for _, tc := range []struct {
		name string
		doc  []byte
		want error
	}{
		{"signed only by a key v1 does not trust", update(t, v2, newK), trust.ErrThreshold},
		{"attacker adds own key", update(t, withKey(t, v1, evil, 2), evil), trust.ErrThreshold},
		{"unsigned", update(t, v2), trust.ErrThreshold},
		{"not newer", update(t, withVersion(v2, 1), oldK), trust.ErrStaleUpdate},
		{"bundle envelope as update", bundleEnvJSON(t, oldK), trust.ErrPayloadType},
		{"garbage", []byte(`{"payloadType":`), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := trust.ApplyUpdate(v1, tc.doc, now)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	// Step 1: add the new key; signed by the old key (and the new one, proving it can sign).
	p, err := trust.ApplyUpdate(v1, update(t, v2, oldK, newK), now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.KeyIDs(), []string{oldK.KeyID(), newK.KeyID()}) {
		t.Fatalf("after step 1: %v", p.KeyIDs())
	}
	// Step 2: bundles are signed with both; either key verifies under v2.
	dir := t.TempDir()
	both := signtest.WriteBundle(t, dir, []byte("model v5"), signtest.Manifest("m", 5, now), oldK, newK)
	if _, ids, err := trust.VerifyBundle(both, p, now); err != nil || len(ids) != 2 {
		t.Fatalf("bundle signed by both under v2: %v %v", ids, err)
	}
	// Step 3: remove the old key. The new policy's own key must sign: the old key alone is refused.
	if _, err := trust.ApplyUpdate(p, update(t, v3, oldK), now); !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("removal signed only by the old key: %v", err)
	}
	p3, err := trust.ApplyUpdate(p, update(t, v3, oldK, newK), now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p3.KeyIDs(), []string{newK.KeyID()}) {
		t.Fatalf("after step 3: %v", p3.KeyIDs())
	}
	// Old-key-only bundles are now rejected, new-key ones accepted.
	dir2 := t.TempDir()
	oldOnly := signtest.WriteBundle(t, dir2, []byte("model v6"), signtest.Manifest("m", 6, now), oldK)
	if _, _, err := trust.VerifyBundle(oldOnly, p3, now); !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("old-key bundle after rotation: %v", err)
	}
	if _, _, err := trust.VerifyBundle(both, p3, now); err != nil {
		t.Fatalf("bundle signed by both after rotation: %v", err)
	}
	// Replaying the step-1 update (validly signed by the old key) cannot bring the old key back.
	if _, err := trust.ApplyUpdate(p3, update(t, v2, oldK, newK), now); !errors.Is(err, trust.ErrStaleUpdate) {
		t.Fatalf("replayed update: %v", err)
	}
	// An expired current key cannot authorise an update.
	v1exp := withExpiry(v1, oldK.KeyID(), now)
	if _, err := trust.ApplyUpdate(v1exp, update(t, v2, oldK, newK), now); !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("update by an expired key: %v", err)
	}
}

func withKey(t *testing.T, p trust.Policy, s *sign.Signer, version uint64) trust.Policy {
	t.Helper()
	p.Keys = append(slices.Clone(p.Keys), trust.Key{ID: s.KeyID(), PublicKeyPEM: string(signtest.PublicKeyPEM(t, s))})
	p.Version = version
	return p
}

func withVersion(p trust.Policy, v uint64) trust.Policy {
	p.Version = v
	return p
}

func bundleEnvJSON(t *testing.T, s *sign.Signer) []byte {
	t.Helper()
	env := signEnv(t, unsigned(t, []byte("m")), s)
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var _ = bundle.PayloadType
