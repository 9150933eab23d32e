// Package signtest makes in-memory signing keys, trust policies and signed bundles for tests of
// the signing, trust and update code. Keys are real (real signatures), but never encrypted or
// written to disk, so tests stay fast (no scrypt).
package signtest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/trust"
)

// NewSigner returns a signer with a fresh key of alg (sign.AlgECDSAP256 or sign.AlgEd25519).
func NewSigner(t testing.TB, alg string) *sign.Signer {
	t.Helper()
	var priv any
	var err error
	switch alg {
	case sign.AlgECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case sign.AlgEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("signtest: unknown algorithm %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// PublicKeyPEM is s's PEM public key.
func PublicKeyPEM(t testing.TB, s *sign.Signer) []byte {
	t.Helper()
	b, err := s.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Policy is a version-1 policy trusting the signers' keys with threshold k.
func Policy(t testing.TB, k int, signers ...*sign.Signer) trust.Policy {
	t.Helper()
	var pems [][]byte
	for _, s := range signers {
		pems = append(pems, PublicKeyPEM(t, s))
	}
	p, err := trust.NewPolicy(k, pems...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Manifest is a valid manifest for NAME at version, created at now, expiring 30 days later.
func Manifest(name string, version uint64, now time.Time) bundle.Manifest {
	return bundle.Manifest{
		Name: name, Detector: "netflow", Version: version, FeatureSet: "netflow/v1", Dim: 4,
		Threshold: 0.5, Created: now.UTC().Truncate(time.Second), Expires: now.UTC().Add(30 * 24 * time.Hour).Truncate(time.Second),
		Quantization: bundle.QuantNone,
	}
}

// WriteBundle packs model and m into dir (bundle.WriteFile), signs it with each signer in order
// (sign.SignBundle) and returns its path.
func WriteBundle(t testing.TB, dir string, model []byte, m bundle.Manifest, signers ...*sign.Signer) string {
	t.Helper()
	path, err := bundle.WriteFile(dir, model, &m)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range signers {
		if err := sign.SignBundle(path, s); err != nil {
			t.Fatal(err)
		}
	}
	return path
}
