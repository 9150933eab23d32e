package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
)

// Signer signs DSSE envelopes with one private key.
type Signer struct {
	sv    signature.SignerVerifier
	pub   crypto.PublicKey
	alg   string
	keyID string
}

// NewSigner wraps an in-memory private key (*ecdsa.PrivateKey on P-256, or ed25519.PrivateKey).
func NewSigner(priv crypto.PrivateKey) (*Signer, error) {
	var (
		sv  signature.SignerVerifier
		pub crypto.PublicKey
		err error
	)
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("new signer: %w: ECDSA curve %s", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		sv, err = signature.LoadECDSASignerVerifier(k, crypto.SHA256)
		pub = k.Public()
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("new signer: %w: bad Ed25519 key size", ErrUnsupportedKey)
		}
		sv, err = signature.LoadED25519SignerVerifier(k)
		pub = k.Public()
	default:
		return nil, fmt.Errorf("new signer: %w: %T", ErrUnsupportedKey, priv)
	}
	if err != nil {
		return nil, fmt.Errorf("new signer: %w", err)
	}
	alg, err := Algorithm(pub)
	if err != nil {
		return nil, fmt.Errorf("new signer: %w", err)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("new signer: %w", err)
	}
	return &Signer{sv: sv, pub: pub, alg: alg, keyID: id}, nil
}

// ParseSigner decrypts an encrypted private key PEM (type "ENCRYPTED SIGSTORE PRIVATE KEY", or
// cosign's "ENCRYPTED COSIGN PRIVATE KEY") with passphrase. Unencrypted keys are refused: signing
// keys must be encrypted at rest. A wrong passphrase yields an error wrapping ErrDecrypt.
func ParseSigner(privPEM, passphrase []byte) (*Signer, error) {
	block, _ := pem.Decode(privPEM)
	if block == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	if block.Type != EncryptedKeyPEMType && block.Type != cosignKeyPEMType {
		return nil, fmt.Errorf("parse private key: PEM type %q: only encrypted keys (%q) are accepted", block.Type, EncryptedKeyPEMType)
	}
	if len(passphrase) == 0 {
		return nil, errors.New("parse private key: empty passphrase")
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(privPEM, cryptoutils.StaticPasswordFunc(passphrase))
	if err != nil {
		// go-securesystemslib reports a bad passphrase as "encrypted: decryption failed"; any
		// failure here means we could not obtain a key from the ciphertext.
		return nil, fmt.Errorf("parse private key: %w: %v", ErrDecrypt, err) //nolint:errorlint // the sentinel is what callers test
	}
	s, err := NewSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	return s, nil
}

// LoadSigner reads an encrypted private key file written by WriteKeyPair and decrypts it. Like ssh,
// it refuses a key file that group or others may read or write.
func LoadSigner(path string, passphrase []byte) (*Signer, error) {
	// The checks apply to the file read (its fstat), which is opened without
	// waiting on a named pipe.
	f, st, err := fsutil.OpenRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	defer f.Close()
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load signing key: %s has mode %#o; it must not be accessible by group or others (chmod 600)", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("load signing key: %s is larger than %d bytes: %w", path, maxKeyFile, fsutil.ErrTooLarge)
	}
	s, err := ParseSigner(b, passphrase)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	return s, nil
}

// KeyID is the signer's key id (see package doc).
func (s *Signer) KeyID() string { return s.keyID }

// Algorithm is AlgECDSAP256 or AlgEd25519.
func (s *Signer) Algorithm() string { return s.alg }

// PublicKey is the signer's public key.
func (s *Signer) PublicKey() crypto.PublicKey { return s.pub }

// PublicKeyPEM is the PEM "PUBLIC KEY" of the signer.
func (s *Signer) PublicKeyPEM() ([]byte, error) {
	b, err := cryptoutils.MarshalPublicKeyToPEM(s.pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return b, nil
}

// Sign returns a DSSE signature over PAE(payloadType, payload) carrying the signer's key id. The
// signing itself goes through sigstore's DSSE wrapper (dsse.WrapSigner), so the encoding is the
// standard one.
func (s *Signer) Sign(payloadType string, payload []byte) (bundle.Signature, error) {
	out, err := dsse.WrapSigner(s.sv, payloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		return bundle.Signature{}, fmt.Errorf("sign: %w", err)
	}
	var env bundle.Envelope
	if err := json.Unmarshal(out, &env); err != nil {
		return bundle.Signature{}, fmt.Errorf("sign: decode sigstore envelope: %w", err)
	}
	if len(env.Signatures) != 1 || env.Signatures[0].Sig == "" {
		return bundle.Signature{}, fmt.Errorf("sign: sigstore returned %d signatures, want 1", len(env.Signatures))
	}
	return bundle.Signature{KeyID: s.keyID, Sig: env.Signatures[0].Sig}, nil
}

// DecodeBase64 decodes a DSSE base64 field the way models/bundle and go-securesystemslib do:
// standard encoding first, then URL-safe.
func DecodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decode base64: %w", err)
	}
	return b, nil
}

// SignEnvelope adds the signer's signature to env. If env already holds a signature by the same
// key (same key id, or no key id but verifying under this key), it is replaced, never duplicated.
func SignEnvelope(env *bundle.Envelope, s *Signer) error {
	payload, err := DecodeBase64(env.Payload)
	if err != nil {
		return fmt.Errorf("sign envelope: payload: %w", err)
	}
	sig, err := s.Sign(env.PayloadType, payload)
	if err != nil {
		return fmt.Errorf("sign envelope: %w", err)
	}
	pae := bundle.PAE(env.PayloadType, payload)
	out := make([]bundle.Signature, 0, len(env.Signatures)+1)
	for _, old := range env.Signatures {
		if old.KeyID == s.keyID {
			continue
		}
		if old.KeyID == "" {
			if raw, err := DecodeBase64(old.Sig); err == nil &&
				s.sv.VerifySignature(bytes.NewReader(raw), bytes.NewReader(pae)) == nil {
				continue
			}
		}
		out = append(out, old)
	}
	env.Signatures = append(out, sig)
	return nil
}

// SignBundle adds the signer's DSSE signature to the envelope of the bundle at bundlePath and
// rewrites the file atomically (temporary file in the same directory, fsync, rename, directory
// fsync). The bundle is read strictly first (models/bundle.Read) and the rewritten tar holds the
// same model bytes; signing twice with the same key replaces that key's signature. Signatures by
// other keys are kept as they are (they cover the unchanged payload).
func SignBundle(bundlePath string, s *Signer) error {
	b, err := bundle.Read(bundlePath, bundle.DefaultLimits())
	if err != nil {
		return fmt.Errorf("sign bundle: %w", err)
	}
	env := b.Envelope
	if err := SignEnvelope(&env, s); err != nil {
		return fmt.Errorf("sign bundle %s: %w", bundlePath, err)
	}
	envJSON, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return fmt.Errorf("sign bundle: encode envelope: %w", err)
	}
	var buf bytes.Buffer
	if err := bundle.PackEnvelope(&buf, b.Model, envJSON, b.Manifest.Created); err != nil {
		return fmt.Errorf("sign bundle %s: %w", bundlePath, err)
	}
	// Check what we are about to write before replacing the original.
	if _, err := bundle.ReadFrom(bytes.NewReader(buf.Bytes()), bundle.DefaultLimits()); err != nil {
		return fmt.Errorf("sign bundle %s: re-read of the signed bundle failed: %w", bundlePath, err)
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(bundlePath); err == nil {
		mode = st.Mode().Perm()
	}
	if err := writeFileAtomic(bundlePath, buf.Bytes(), mode); err != nil {
		return fmt.Errorf("sign bundle: %w", err)
	}
	return nil
}
