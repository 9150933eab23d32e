package trust_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/json"
	"slices"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/trust"
)

// fixedSigners are deterministic keys, so that a crashing input found by the fuzzer reproduces
// (the seed envelopes carry signatures by these keys).
func fixedSigners(t testing.TB) (*sign.Signer, *sign.Signer) {
	t.Helper()
	scalar := bytes.Repeat([]byte{0x42}, 32)
	ek, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := sign.NewSigner(ek)
	if err != nil {
		t.Fatal(err)
	}
	ed, err := sign.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x17}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return ec, ed
}

func fixedPolicy(t testing.TB, k int, signers ...*sign.Signer) trust.Policy {
	t.Helper()
	var pems [][]byte
	for _, s := range signers {
		p, err := s.PublicKeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, p)
	}
	p, err := trust.NewPolicy(k, pems...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzVerifyEnvelope: arbitrary envelope JSON against a fixed policy errors or verifies, never
// panics; a success names only trusted keys, at least the threshold; ApplyUpdate likewise.
func FuzzVerifyEnvelope(f *testing.F) {
	ec, ed := fixedSigners(f)
	pol := fixedPolicy(f, 2, ec, ed)

	m := bundle.Manifest{Name: "m", Detector: "netflow", Version: 1, FeatureSet: "netflow/v1", Dim: 4, Threshold: 1,
		Created: now, Expires: now.AddDate(0, 1, 0), Quantization: bundle.QuantNone}
	env, err := bundle.NewEnvelope([]byte("model"), &m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mustJSON(f, env))
	for _, s := range []*sign.Signer{ec, ed} {
		if err := sign.SignEnvelope(env, s); err != nil {
			f.Fatal(err)
		}
		f.Add(mustJSON(f, env))
	}
	upd, err := trust.NewUpdate(func() trust.Policy { p := pol; p.Version = 2; return p }())
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []*sign.Signer{ec, ed} {
		if err := sign.SignEnvelope(upd, s); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(mustJSON(f, upd))
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"AAAA"}]}`))
	f.Add([]byte(`{"payloadType":"","payload":"","signatures":null}`))
	f.Add([]byte(`null`))

	trusted := pol.KeyIDs()
	f.Fuzz(func(t *testing.T, data []byte) {
		var e bundle.Envelope
		if json.Unmarshal(data, &e) == nil {
			for _, pt := range []string{bundle.PayloadType, trust.PolicyPayloadType} {
				res, err := pol.VerifyEnvelope(e, pt, now)
				if err != nil {
					continue
				}
				if len(res.VerifiedBy) < pol.Threshold {
					t.Fatalf("verified with %d < threshold signatures", len(res.VerifiedBy))
				}
				for _, id := range res.VerifiedBy {
					if !slices.Contains(trusted, id) {
						t.Fatalf("verified by untrusted key %q", id)
					}
				}
			}
		}
		next, err := trust.ApplyUpdate(pol, data, now)
		if err == nil {
			if next.Version <= pol.Version {
				t.Fatalf("update accepted with version %d", next.Version)
			}
			if err := next.Validate(); err != nil {
				t.Fatalf("update accepted an invalid policy: %v", err)
			}
		}
	})
}

// FuzzPolicyLoad: arbitrary policy JSON parses into a valid policy or errors, never panics; a
// parsed policy survives an encode/parse round trip.
func FuzzPolicyLoad(f *testing.F) {
	ec, ed := fixedSigners(f)
	p := fixedPolicy(f, 2, ec, ed)
	b, err := p.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1,"threshold":1,"keys":[]}`))
	f.Add([]byte(`{"keys":[{"id":"00","public_key":"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n","expires":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := trust.ParsePolicy(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParsePolicy returned an invalid policy: %v", err)
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		q, err := trust.ParsePolicy(out)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if q.Threshold != p.Threshold || q.Version != p.Version || !slices.Equal(q.KeyIDs(), p.KeyIDs()) {
			t.Fatalf("round trip changed the policy: %+v vs %+v", p, q)
		}
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
