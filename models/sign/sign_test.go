package sign_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/models/trust"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func readEnvelope(t *testing.T, path string) (*bundle.Bundle, bundle.Envelope) {
	t.Helper()
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return b, b.Envelope
}

// TestKeygenSignVerify goes through what the CLI does, with real encrypted keys on disk:
// keygen, write, load with the passphrase, sign a bundle, verify it against a policy.
func TestKeygenSignVerify(t *testing.T) {
	for _, alg := range []string{sign.AlgECDSAP256, sign.AlgEd25519} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			pass := []byte("correct horse battery")
			privPEM, pubPEM, id, err := sign.GenerateKey(alg, pass)
			if err != nil {
				t.Fatal(err)
			}
			// The key id is the hex SHA-256 of the DER SPKI inside the PEM, computed independently.
			blk, _ := pem.Decode(pubPEM)
			sum := sha256.Sum256(blk.Bytes)
			if want := hex.EncodeToString(sum[:]); id != want {
				t.Fatalf("key id %s, want %s", id, want)
			}
			if blk, _ := pem.Decode(privPEM); blk == nil || blk.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" {
				t.Fatalf("private key PEM is not an encrypted sigstore key")
			}
			if bytes.Contains(privPEM, []byte("BEGIN PRIVATE KEY")) {
				t.Fatal("private key stored in clear")
			}

			prefix := filepath.Join(dir, "release")
			if err := sign.WriteKeyPair(prefix, privPEM, pubPEM); err != nil {
				t.Fatal(err)
			}
			for path, mode := range map[string]os.FileMode{prefix + ".key": 0o600, prefix + ".pub": 0o644} {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != mode {
					t.Errorf("%s: mode %#o, want %#o", path, st.Mode().Perm(), mode)
				}
			}
			if err := sign.WriteKeyPair(prefix, privPEM, pubPEM); !errors.Is(err, os.ErrExist) {
				t.Errorf("second WriteKeyPair: %v, want ErrExist", err)
			}

			// The cipher does not depend on the key type; one wrong-passphrase check saves a
			// scrypt run (slow, and much slower under -race).
			if alg == sign.AlgECDSAP256 {
				if _, err := sign.LoadSigner(prefix+".key", []byte("wrong passphrase")); !errors.Is(err, sign.ErrDecrypt) {
					t.Fatalf("wrong passphrase: %v, want ErrDecrypt", err)
				}
			}
			s, err := sign.LoadSigner(prefix+".key", pass)
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyID() != id || s.Algorithm() != alg {
				t.Fatalf("loaded signer %s/%s, want %s/%s", s.KeyID(), s.Algorithm(), id, alg)
			}
			pubFile, pubID, err := sign.ReadPublicKeyFile(prefix + ".pub")
			if err != nil || pubID != id {
				t.Fatalf("ReadPublicKeyFile: %s %v", pubID, err)
			}

			model := []byte("model bytes " + alg)
			path := signtest.WriteBundle(t, dir, model, signtest.Manifest("m", 3, now), s)
			pol, err := trust.NewPolicy(1, pubFile)
			if err != nil {
				t.Fatal(err)
			}
			b, ids, err := trust.VerifyBundle(path, pol, now.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, []string{id}) || !bytes.Equal(b.Model, model) {
				t.Fatalf("verified by %v, model %q", ids, b.Model)
			}
			// A policy trusting another key rejects it.
			other := signtest.Policy(t, 1, signtest.NewSigner(t, alg))
			if _, _, err := trust.VerifyBundle(path, other, now); !errors.Is(err, trust.ErrThreshold) {
				t.Fatalf("untrusted key: %v, want ErrThreshold", err)
			}
		})
	}
}

func TestLoadSignerRefuses(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clear, err := cryptoutils.MarshalPrivateKeyToPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	clearPath := filepath.Join(dir, "clear.key")
	if err := os.WriteFile(clearPath, clear, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sign.LoadSigner(clearPath, []byte("whatever123")); err == nil {
		t.Error("unencrypted key accepted")
	}

	pass := []byte("passphrase-1")
	encPEM, _, _, err := sign.GenerateKey(sign.AlgEd25519, pass)
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, encPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil { // umask-proof
		t.Fatal(err)
	}
	if _, err := sign.LoadSigner(open, pass); err == nil {
		t.Error("group/world-readable key file accepted")
	}
	if _, err := sign.ParseSigner(encPEM, nil); err == nil {
		t.Error("empty passphrase accepted")
	}
	if _, _, _, err := sign.GenerateKey(sign.AlgEd25519, []byte("short")); err == nil {
		t.Error("short passphrase accepted")
	}
	if _, _, _, err := sign.GenerateKey("rsa-2048", pass); err == nil {
		t.Error("unknown algorithm accepted")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := sign.NewSigner(p384); !errors.Is(err, sign.ErrUnsupportedKey) {
		t.Errorf("P-384: %v, want ErrUnsupportedKey", err)
	}
	p384pub, _ := cryptoutils.MarshalPublicKeyToPEM(p384.Public())
	if _, _, err := sign.ParsePublicKeyPEM(p384pub); err == nil {
		t.Error("P-384 public key accepted")
	}
	good := signtest.PublicKeyPEM(t, signtest.NewSigner(t, sign.AlgEd25519))
	if _, _, err := sign.ParsePublicKeyPEM(append(slices.Clone(good), good...)); err == nil {
		t.Error("two PEM blocks accepted")
	}
}

// TestParsePublicKeyPEMNothingAround: a public key is exactly one PEM block with nothing but
// whitespace around it, before it as well as after. pem.Decode skips text before a block and
// blocks it cannot decode, so a trust policy's public_key could show one thing to a reader (text,
// or a first key block) while another key was trusted.
func TestParsePublicKeyPEMNothingAround(t *testing.T) {
	good := signtest.PublicKeyPEM(t, signtest.NewSigner(t, sign.AlgEd25519))
	other := signtest.PublicKeyPEM(t, signtest.NewSigner(t, sign.AlgECDSAP256))
	// other's block with its base64 broken: pem.Decode skips it and decodes the next one.
	broken := bytes.Replace(slices.Clone(other), []byte("\n"), []byte("\n!"), 2)
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"alone", good, true},
		{"whitespace around", append(append([]byte("\n\r\n"), good...), "\n \t\n"...), true},
		{"text before", append([]byte("Trusted key: CERT release key A\n"), good...), false},
		{"undecodable block before", append(slices.Clone(broken), good...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, id, err := sign.ParsePublicKeyPEM(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("got id %q, error %v; want ok=%v", id, err, tc.ok)
			}
		})
	}
}

func TestSignBundleReplacesSameKey(t *testing.T) {
	dir := t.TempDir()
	a := signtest.NewSigner(t, sign.AlgECDSAP256)
	b := signtest.NewSigner(t, sign.AlgEd25519)
	model := []byte("the model")
	path := signtest.WriteBundle(t, dir, model, signtest.Manifest("m", 1, now), a, a)
	_, env := readEnvelope(t, path)
	if len(env.Signatures) != 1 || env.Signatures[0].KeyID != a.KeyID() {
		t.Fatalf("after signing twice with one key: %+v", env.Signatures)
	}
	if err := sign.SignBundle(path, b); err != nil {
		t.Fatal(err)
	}
	if err := sign.SignBundle(path, a); err != nil {
		t.Fatal(err)
	}
	got, env := readEnvelope(t, path)
	var ids []string
	for _, s := range env.Signatures {
		ids = append(ids, s.KeyID)
	}
	slices.Sort(ids)
	want := []string{a.KeyID(), b.KeyID()}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("signature key ids %v, want %v", ids, want)
	}
	if !bytes.Equal(got.Model, model) {
		t.Fatal("model bytes changed by signing")
	}
	pol := signtest.Policy(t, 2, a, b)
	if _, _, err := trust.VerifyBundle(path, pol, now); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("bundle mode %#o after signing, want 0644", st.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// A signature without key id (as sigstore's own WrapSigner makes) by the same key is replaced
	// too; one by another key is kept.
	m := signtest.Manifest("m", 1, now)
	fresh, err := bundle.NewEnvelope(model, &m)
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.SignEnvelope(fresh, a); err != nil {
		t.Fatal(err)
	}
	fresh.Signatures[0].KeyID = ""
	if err := sign.SignEnvelope(fresh, b); err != nil {
		t.Fatal(err)
	}
	if len(fresh.Signatures) != 2 {
		t.Fatalf("keyless signature of another key dropped: %+v", fresh.Signatures)
	}
	if err := sign.SignEnvelope(fresh, a); err != nil {
		t.Fatal(err)
	}
	if len(fresh.Signatures) != 2 || fresh.Signatures[0].KeyID != b.KeyID() || fresh.Signatures[1].KeyID != a.KeyID() {
		t.Fatalf("keyless signature of the same key not replaced: %+v", fresh.Signatures)
	}
}

func TestSignBundleRejectsBadBundle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.vgb")
	if err := os.WriteFile(path, []byte("not a tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sign.SignBundle(path, signtest.NewSigner(t, sign.AlgEd25519)); !errors.Is(err, bundle.ErrInvalid) {
		t.Fatalf("SignBundle on garbage: %v, want bundle.ErrInvalid", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a tar" {
		t.Fatal("bad bundle was rewritten")
	}
}

// TestInteropSigstoreDSSE verifies our envelopes with sigstore's and go-securesystemslib's own
// DSSE verifiers, independently of models/trust, and the reverse: an envelope signed by sigstore's
// DSSE signer verifies under our policy.
func TestInteropSigstoreDSSE(t *testing.T) {
	dir := t.TempDir()
	ec := signtest.NewSigner(t, sign.AlgECDSAP256)
	ed := signtest.NewSigner(t, sign.AlgEd25519)
	path := signtest.WriteBundle(t, dir, []byte("interop model"), signtest.Manifest("m", 1, now), ec, ed)
	b, env := readEnvelope(t, path)

	verifier := func(s *sign.Signer) signature.Verifier {
		v, err := signature.LoadVerifier(s.PublicKey(), 0x5) // crypto.SHA256
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// 1. sigstore's dsse.WrapVerifier (one key, with payload type check). go-securesystemslib
	// matches a signature's keyid against the SSH-style "SHA256:..." fingerprint when the
	// verifier has none, so it skips signatures carrying our hex key ids; DSSE key ids are
	// unauthenticated hints, so we blank them for this check: the signature bytes are what matters.
	blank := env
	blank.Signatures = nil
	for _, s := range env.Signatures {
		blank.Signatures = append(blank.Signatures, bundle.Signature{Sig: s.Sig})
	}
	blankJSON, _ := json.Marshal(blank)
	for _, s := range []*sign.Signer{ec, ed} {
		var payload []byte
		wv := sigdsse.WrapVerifier(verifier(s), sigdsse.WithExpectedPayloadType(bundle.PayloadType), sigdsse.WithDecodedPayload(&payload))
		if err := wv.VerifySignature(bytes.NewReader(blankJSON), nil); err != nil {
			t.Fatalf("sigstore dsse.WrapVerifier (%s): %v", s.Algorithm(), err)
		}
		if !bytes.Contains(payload, []byte(b.Manifest.ModelSHA256)) {
			t.Fatal("decoded payload does not hold the model digest")
		}
	}
	// Documented limitation, logged rather than asserted: with our hex key ids left in place,
	// sigstore's WrapVerifier skips every signature (see the comment above).
	asIs, _ := json.Marshal(env)
	if err := sigdsse.WrapVerifier(verifier(ec)).VerifySignature(bytes.NewReader(asIs), nil); err != nil {
		t.Logf("sigstore dsse.WrapVerifier with hex keyids present: %v", err)
	} else {
		t.Logf("sigstore dsse.WrapVerifier now accepts hex keyids as they are")
	}
	// Tampering is caught by sigstore's verifier as well.
	bad := blank
	bad.Payload = "e30=" // "{}"
	badJSON, _ := json.Marshal(bad)
	if err := sigdsse.WrapVerifier(verifier(ec)).VerifySignature(bytes.NewReader(badJSON), nil); err == nil {
		t.Fatal("sigstore verifier accepted a tampered payload")
	}

	// 2. go-securesystemslib's multi-key envelope verifier with sigstore's adapters carrying our
	// key ids: the envelope as written, threshold 2.
	var adapters []ssldsse.Verifier
	for _, s := range []*sign.Signer{ec, ed} {
		adapters = append(adapters, &sigdsse.VerifierAdapter{SignatureVerifier: verifier(s), Pub: s.PublicKey(), PubKeyID: s.KeyID()})
	}
	ev, err := ssldsse.NewMultiEnvelopeVerifier(2, adapters...)
	if err != nil {
		t.Fatal(err)
	}
	sslEnv := ssldsse.Envelope{PayloadType: env.PayloadType, Payload: env.Payload}
	for _, s := range env.Signatures {
		sslEnv.Signatures = append(sslEnv.Signatures, ssldsse.Signature{KeyID: s.KeyID, Sig: s.Sig})
	}
	accepted, _, err := ev.VerifyAndDecode(context.Background(), &sslEnv)
	if err != nil || len(accepted) != 2 {
		t.Fatalf("go-securesystemslib verifier: %d accepted, %v", len(accepted), err)
	}

	// 3. Reverse: sigstore's own DSSE signer (no keyid) verifies under our policy.
	sv, _, err := signature.NewDefaultECDSASignerVerifier()
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := sign.DecodeBase64(env.Payload)
	out, err := sigdsse.WrapSigner(sv, bundle.PayloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	var foreign bundle.Envelope
	if err := json.Unmarshal(out, &foreign); err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := cryptoutils.MarshalPublicKeyToPEM(mustPub(t, sv))
	pol, err := trust.NewPolicy(1, pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := pol.Verify(foreign, now); err != nil || len(ids) != 1 {
		t.Fatalf("sigstore-signed envelope: %v %v", ids, err)
	}
}

func mustPub(t *testing.T, sv signature.SignerVerifier) any {
	t.Helper()
	p, err := sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
