package trust_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
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

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// unsigned returns the unsigned envelope of model with a valid manifest.
func unsigned(t *testing.T, model []byte) bundle.Envelope {
	t.Helper()
	m := signtest.Manifest("m", 1, now)
	env, err := bundle.NewEnvelope(model, &m)
	if err != nil {
		t.Fatal(err)
	}
	return *env
}

func signEnv(t *testing.T, env bundle.Envelope, signers ...*sign.Signer) bundle.Envelope {
	t.Helper()
	env.Signatures = slices.Clone(env.Signatures)
	for _, s := range signers {
		if err := sign.SignEnvelope(&env, s); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func withExpiry(p trust.Policy, id string, at time.Time) trust.Policy {
	p.Keys = slices.Clone(p.Keys)
	for i := range p.Keys {
		if p.Keys[i].ID == id {
			p.Keys[i].Expires = &at
		}
	}
	return p
}

func TestVerifyThreshold(t *testing.T) {
	a := signtest.NewSigner(t, sign.AlgECDSAP256)
	b := signtest.NewSigner(t, sign.AlgEd25519)
	c := signtest.NewSigner(t, sign.AlgECDSAP256)
	u := signtest.NewSigner(t, sign.AlgEd25519) // not in any policy
	env := unsigned(t, []byte("model"))
	other := unsigned(t, []byte("another model"))
	pol1 := signtest.Policy(t, 1, a, b, c)
	pol2 := signtest.Policy(t, 2, a, b, c)

	dup := signEnv(t, env, a)
	dup.Signatures = append(dup.Signatures, dup.Signatures[0]) // same key twice
	// a's signature over another payload, presented with a's key id on env: invalid.
	badA := env
	badA.Signatures = signEnv(t, other, a).Signatures
	// A signature made for another payload type over the same payload.
	payload, _ := sign.DecodeBase64(env.Payload)
	crossType, err := a.Sign("application/json", payload)
	if err != nil {
		t.Fatal(err)
	}
	keyless := signEnv(t, env, b)
	keyless.Signatures[0].KeyID = ""

	tests := []struct {
		name     string
		pol      trust.Policy
		env      bundle.Envelope
		want     []string // nil: expect ErrThreshold
		unknown  int
		invalid  []string
		expired  []string
		errParts []string
	}{
		{name: "k1 one signature", pol: pol1, env: signEnv(t, env, a), want: []string{a.KeyID()}},
		{name: "k2 one signature", pol: pol2, env: signEnv(t, env, a), errParts: []string{"1 of 2 required", "3 keys"}},
		{name: "k2 two signatures", pol: pol2, env: signEnv(t, env, a, b), want: sorted(a.KeyID(), b.KeyID())},
		{name: "k2 three signatures", pol: pol2, env: signEnv(t, env, c, b, a), want: sorted(a.KeyID(), b.KeyID(), c.KeyID())},
		{name: "k2 same key twice counts once", pol: pol2, env: dup, errParts: []string{"1 of 2"}},
		{name: "unsigned", pol: pol1, env: env, errParts: []string{"0 of 1"}},
		{name: "unknown key ignored", pol: pol1, env: signEnv(t, env, u, a), want: []string{a.KeyID()}, unknown: 1},
		{name: "only unknown key", pol: pol1, env: signEnv(t, env, u), unknown: 1, errParts: []string{"0 of 1", "1 from unknown keys"}},
		{name: "expired key not counted", pol: withExpiry(pol1, a.KeyID(), now), env: signEnv(t, env, a),
			expired: []string{a.KeyID()}, errParts: []string{"expired"}},
		{name: "expired key, other key valid", pol: withExpiry(pol1, a.KeyID(), now.Add(-time.Hour)), env: signEnv(t, env, a, b),
			want: []string{b.KeyID()}, expired: []string{a.KeyID()}},
		{name: "key not yet expired", pol: withExpiry(pol1, a.KeyID(), now.Add(time.Second)), env: signEnv(t, env, a), want: []string{a.KeyID()}},
		{name: "bad signature ignored", pol: pol1, env: appendSigs(badA, signEnv(t, env, b).Signatures...), want: []string{b.KeyID()}, invalid: []string{a.KeyID()}},
		{name: "bad signature does not count", pol: pol2, env: appendSigs(badA, signEnv(t, env, b).Signatures...),
			invalid: []string{a.KeyID()}, errParts: []string{"1 of 2", "1 invalid"}},
		{name: "signature for another payload type", pol: pol1, env: appendSigs(env, crossType), invalid: []string{a.KeyID()}},
		{name: "not base64 signature", pol: pol1, env: appendSigs(env, bundle.Signature{KeyID: a.KeyID(), Sig: "!!"}), invalid: []string{a.KeyID()}},
		{name: "keyless signature matched by trying keys", pol: pol1, env: keyless, want: []string{b.KeyID()}},
		{name: "keyless unknown signature", pol: pol1, env: signEnv(t, unsignedKeyless(t, env, u)), unknown: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.pol.VerifyEnvelope(tc.env, bundle.PayloadType, now)
			if tc.want != nil {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if !slices.Equal(res.VerifiedBy, tc.want) {
					t.Fatalf("verified by %v, want %v", res.VerifiedBy, tc.want)
				}
				ids, err := tc.pol.Verify(tc.env, now)
				if err != nil || !slices.Equal(ids, tc.want) {
					t.Fatalf("Verify: %v %v", ids, err)
				}
			} else {
				var te *trust.ThresholdError
				if !errors.As(err, &te) || !errors.Is(err, trust.ErrThreshold) {
					t.Fatalf("want a ThresholdError, got %v", err)
				}
				for _, part := range tc.errParts {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q does not mention %q", err, part)
					}
				}
			}
			if len(res.Unknown) != tc.unknown {
				t.Errorf("unknown %v, want %d", res.Unknown, tc.unknown)
			}
			if !slices.Equal(res.Invalid, tc.invalid) {
				t.Errorf("invalid %v, want %v", res.Invalid, tc.invalid)
			}
			if !slices.Equal(res.Expired, tc.expired) {
				t.Errorf("expired %v, want %v", res.Expired, tc.expired)
			}
		})
	}
}

func unsignedKeyless(t *testing.T, env bundle.Envelope, s *sign.Signer) bundle.Envelope {
	e := signEnv(t, env, s)
	e.Signatures[0].KeyID = ""
	return e
}

func appendSigs(env bundle.Envelope, sigs ...bundle.Signature) bundle.Envelope {
	env.Signatures = append(slices.Clone(env.Signatures), sigs...)
	return env
}

func sorted(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

func TestVerifyPayloadType(t *testing.T) {
	a := signtest.NewSigner(t, sign.AlgEd25519)
	pol := signtest.Policy(t, 1, a)
	env := signEnv(t, unsigned(t, []byte("m")), a)
	env.PayloadType = "application/json"
	if _, err := pol.Verify(env, now); !errors.Is(err, trust.ErrPayloadType) {
		t.Fatalf("wrong payload type: %v", err)
	}
	// Even correctly signed under the other type, Verify wants the bundle type.
	env = signEnv(t, env, a)
	if _, err := pol.Verify(env, now); !errors.Is(err, trust.ErrPayloadType) {
		t.Fatalf("wrong payload type, signed: %v", err)
	}
	if _, err := pol.VerifyEnvelope(env, "application/json", now); err != nil {
		t.Fatalf("generic verify of the other type: %v", err)
	}
}

// repack writes a bundle with arbitrary model bytes and envelope, as an attacker could.
func repack(t *testing.T, dir, name string, model []byte, env bundle.Envelope) string {
	t.Helper()
	envJSON, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.PackEnvelope(&buf, model, envJSON, now); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func editStatement(t *testing.T, env bundle.Envelope, edit func(*bundle.Statement)) bundle.Envelope {
	t.Helper()
	payload, err := sign.DecodeBase64(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var st bundle.Statement
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	edit(&st)
	payload, err = json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	env.Payload = base64.StdEncoding.EncodeToString(payload)
	return env
}

func TestVerifyBundleRejects(t *testing.T) {
	dir := t.TempDir()
	a := signtest.NewSigner(t, sign.AlgECDSAP256)
	b := signtest.NewSigner(t, sign.AlgEd25519)
	pol := signtest.Policy(t, 1, a, b)
	model := []byte("real model bytes")
	good := signtest.WriteBundle(t, filepath.Join(dir), model, signtest.Manifest("m", 7, now), a)
	gb, err := bundle.Read(good, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	otherDir := filepath.Join(dir, "other")
	if err := os.Mkdir(otherDir, 0o755); err != nil {
		t.Fatal(err)
	}
	otherModel := []byte("an older, signed model")
	other := signtest.WriteBundle(t, otherDir, otherModel, signtest.Manifest("m", 9, now), a)
	ob, err := bundle.Read(other, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	expiredM := signtest.Manifest("m", 8, now.Add(-60*24*time.Hour))
	expiredDir := filepath.Join(dir, "expired")
	if err := os.Mkdir(expiredDir, 0o755); err != nil {
		t.Fatal(err)
	}
	expired := signtest.WriteBundle(t, expiredDir, model, expiredM, a)

	if _, ids, err := trust.VerifyBundle(good, pol, now); err != nil || !slices.Equal(ids, []string{a.KeyID()}) {
		t.Fatalf("good bundle: %v %v", ids, err)
	}
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"unsigned", repack(t, dir, "unsigned.vgb", model, unsigned(t, model)), trust.ErrThreshold},
		{"manifest altered (threshold)", repack(t, dir, "manifest.vgb", model,
			editStatement(t, gb.Envelope, func(s *bundle.Statement) { s.Predicate.Threshold *= 10 })), trust.ErrThreshold},
		{"manifest altered (version)", repack(t, dir, "version.vgb", model,
			editStatement(t, gb.Envelope, func(s *bundle.Statement) { s.Predicate.Version = 99 })), trust.ErrThreshold},
		{"model altered, statement updated", repack(t, dir, "model-stmt.vgb", otherModel,
			editStatement(t, gb.Envelope, func(s *bundle.Statement) {
				sum := bundle.SHA256Hex(otherModel)
				s.Subject[0].Digest["sha256"] = sum
				s.Predicate.ModelSHA256 = sum
			})), trust.ErrThreshold},
		{"model altered", repack(t, dir, "model.vgb", append(slices.Clone(model), '!'), gb.Envelope), bundle.ErrInvalid},
		{"envelope swapped", repack(t, dir, "swap.vgb", model, ob.Envelope), bundle.ErrInvalid},
		{"wrong payload type", repack(t, dir, "ptype.vgb", model, withType(gb.Envelope, "application/json")), bundle.ErrInvalid},
		{"expired manifest", expired, trust.ErrExpired},
		{"signed by untrusted key only", signtest.WriteBundle(t, t.TempDir(), model, signtest.Manifest("m", 7, now),
			signtest.NewSigner(t, sign.AlgEd25519)), trust.ErrThreshold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bd, ids, err := trust.VerifyBundle(tc.path, pol, now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v (ids %v), want %v", err, ids, tc.want)
			}
			if bd != nil || ids != nil {
				t.Fatal("a rejected bundle must not be returned")
			}
		})
	}
	// The other bundle on its own is fine: the rejections above come from the swap.
	if _, _, err := trust.VerifyBundle(other, pol, now); err != nil {
		t.Fatal(err)
	}
	// Expiry is exact: valid up to, not at, Expires.
	if _, _, err := trust.VerifyBundle(good, pol, gb.Manifest.Expires.Add(-time.Second)); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	if _, _, err := trust.VerifyBundle(good, pol, gb.Manifest.Expires); !errors.Is(err, trust.ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	// Reader variant.
	f, err := os.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := trust.VerifyBundleReader(f, bundle.DefaultLimits(), pol, now); err != nil {
		t.Fatal(err)
	}
}

func withType(env bundle.Envelope, pt string) bundle.Envelope {
	env.PayloadType = pt
	return env
}
