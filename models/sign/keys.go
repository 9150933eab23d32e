// Package sign manages Vigil's model-signing keys and adds DSSE signatures to model bundles.
//
// Keys are ECDSA P-256 (SHA-256, ASN.1 DER signatures) or Ed25519. A private key is stored
// encrypted at rest in sigstore's format: a PEM block of type "ENCRYPTED SIGSTORE PRIVATE KEY"
// holding the PKCS#8 DER encrypted with scrypt + NaCl secretbox (go-securesystemslib
// "encrypted"), the same format cosign and sigstore read. Public keys are PEM "PUBLIC KEY"
// (PKIX SubjectPublicKeyInfo).
//
// Key id: the lowercase hex SHA-256 of the public key's DER SubjectPublicKeyInfo, 64 characters.
// Anyone can recompute it, e.g.
//
//	openssl pkey -pubin -in KEY.pub -outform DER | sha256sum
//
// It is written in each DSSE signature's "keyid" field. Note that DSSE key ids are unauthenticated
// hints; verifiers (package models/trust) look the key up by id and then verify the signature with
// that key, so a wrong id can only make a signature be ignored, never accepted.
//
// Signing uses sigstore (github.com/sigstore/sigstore v1.10.11, pkg/signature and
// pkg/signature/dsse), which signs DSSE's pre-authentication encoding PAE(payloadType, payload), so
// the envelope stays standard DSSE. Verification and trust policy live in models/trust.
package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// Key algorithms accepted by GenerateKey and found by ParsePublicKeyPEM.
const (
	AlgECDSAP256 = "ecdsa-p256"
	AlgEd25519   = "ed25519"
)

// MinPassphraseLen is the shortest passphrase GenerateKey accepts.
const MinPassphraseLen = 8

// maxKeyFile bounds key files read from disk.
const maxKeyFile = 64 << 10

// PEM block types.
const (
	EncryptedKeyPEMType = string(cryptoutils.EncryptedSigstorePrivateKeyPEMType) // "ENCRYPTED SIGSTORE PRIVATE KEY"
	cosignKeyPEMType    = "ENCRYPTED COSIGN PRIVATE KEY"                         // same format, cosign's name
	PublicKeyPEMType    = string(cryptoutils.PublicKeyPEMType)                   // "PUBLIC KEY"
)

// Errors callers may test with errors.Is.
var (
	// ErrDecrypt: the private key could not be decrypted (most often a wrong passphrase).
	ErrDecrypt = errors.New("cannot decrypt private key (wrong passphrase?)")
	// ErrUnsupportedKey: not an ECDSA P-256 or Ed25519 key.
	ErrUnsupportedKey = errors.New("unsupported key (want ECDSA P-256 or Ed25519)")
)

// KeyID is the key id of pub: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// Algorithm names pub's algorithm (AlgECDSAP256 or AlgEd25519) or fails with ErrUnsupportedKey.
func Algorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return AlgECDSAP256, nil
		}
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return AlgEd25519, nil
		}
	}
	return "", fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// ParsePublicKeyPEM parses exactly one PEM "PUBLIC KEY" block (nothing but whitespace around it)
// holding an ECDSA P-256 or Ed25519 key, and returns the key and its key id.
func ParsePublicKeyPEM(pemBytes []byte) (crypto.PublicKey, string, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, "", errors.New("parse public key: no PEM block")
	}
	if block.Type != PublicKeyPEMType {
		return nil, "", fmt.Errorf("parse public key: PEM type %q, want %q", block.Type, PublicKeyPEMType)
	}
	if len(block.Headers) != 0 {
		return nil, "", errors.New("parse public key: unexpected PEM headers")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, "", errors.New("parse public key: trailing data after the PEM block")
	}
	// pem.Decode skips text before a block, and blocks it cannot decode: the block must be the
	// only one, and the first thing.
	if !bytes.HasPrefix(trimSpace(pemBytes), []byte("-----BEGIN ")) || bytes.Count(pemBytes, []byte("-----BEGIN")) != 1 {
		return nil, "", errors.New("parse public key: data before the PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("parse public key: %w", err)
	}
	if _, err := Algorithm(pub); err != nil {
		return nil, "", fmt.Errorf("parse public key: %w", err)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, "", err
	}
	return pub, id, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// NewVerifier returns sigstore's verifier for pub: ECDSA P-256 with SHA-256, or pure Ed25519. It
// verifies raw signatures over a message (for DSSE the message is the PAE).
func NewVerifier(pub crypto.PublicKey) (signature.Verifier, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			break
		}
		v, err := signature.LoadECDSAVerifier(k, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("load verifier: %w", err)
		}
		return v, nil
	case ed25519.PublicKey:
		v, err := signature.LoadED25519Verifier(k)
		if err != nil {
			return nil, fmt.Errorf("load verifier: %w", err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("load verifier: %w: %T", ErrUnsupportedKey, pub)
}

// GenerateKey makes a new signing key. alg is AlgECDSAP256 or AlgEd25519. privPEM is the private key
// encrypted with passphrase (PEM "ENCRYPTED SIGSTORE PRIVATE KEY", scrypt + secretbox); pubPEM is
// the PEM "PUBLIC KEY"; keyID is KeyID of the public key.
func GenerateKey(alg string, passphrase []byte) (privPEM, pubPEM []byte, keyID string, err error) {
	if len(passphrase) < MinPassphraseLen {
		return nil, nil, "", fmt.Errorf("generate key: passphrase shorter than %d bytes", MinPassphraseLen)
	}
	var priv crypto.Signer
	switch alg {
	case AlgECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, nil, "", fmt.Errorf("generate key: unknown algorithm %q (want %s or %s)", alg, AlgECDSAP256, AlgEd25519)
	}
	if err != nil {
		return nil, nil, "", fmt.Errorf("generate key: %w", err)
	}
	enc, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv, cryptoutils.StaticPasswordFunc(passphrase))
	if err != nil {
		return nil, nil, "", fmt.Errorf("generate key: encrypt: %w", err)
	}
	privPEM = cryptoutils.PEMEncode(cryptoutils.EncryptedSigstorePrivateKeyPEMType, enc)
	pubPEM, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, nil, "", fmt.Errorf("generate key: %w", err)
	}
	keyID, err = KeyID(priv.Public())
	if err != nil {
		return nil, nil, "", fmt.Errorf("generate key: %w", err)
	}
	return privPEM, pubPEM, keyID, nil
}

// WriteKeyPair writes prefix+".key" (mode 0600) and prefix+".pub" (0644). Each file is written to
// a temporary file in the same directory, fsynced and then linked into place, so a crash never
// leaves a partial key, and an existing file is never overwritten (the error wraps os.ErrExist).
func WriteKeyPair(prefix string, privPEM, pubPEM []byte) error {
	keyPath, pubPath := prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("write key pair: %s: %w", p, os.ErrExist)
		}
	}
	if err := writeFileNoClobber(keyPath, privPEM, 0o600); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	if err := writeFileNoClobber(pubPath, pubPEM, 0o644); err != nil {
		_ = os.Remove(keyPath)
		return fmt.Errorf("write key pair: %w", err)
	}
	return nil
}

// writeFileNoClobber writes data to path atomically; it fails if path exists.
func writeFileNoClobber(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return fsutil.SyncDir(filepath.Dir(path))
}

// writeFileAtomic writes data to path atomically, replacing it if it exists.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return fsutil.SyncDir(filepath.Dir(path))
}

// writeTemp writes data to a new temporary file next to path with the given mode, fsyncs it and
// returns its name.
func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*") // created 0600
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if err := f.Chmod(mode); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", name, err))
	}
	if _, err := f.Write(data); err != nil {
		return fail(fmt.Errorf("write %s: %w", name, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync %s: %w", name, err))
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("close %s: %w", name, err)
	}
	return name, nil
}

// readLimited reads at most max bytes of the regular file at path (a symbolic link to one is
// followed: admins name key files); a larger file is an error wrapping fsutil.ErrTooLarge, and
// anything but a regular file one wrapping fsutil.ErrNotRegular, at once: a named pipe would
// otherwise hold the caller for good, waiting for a writer. A missing file's error wraps
// os.ErrNotExist.
func readLimited(path string, max int64) ([]byte, error) {
	return fsutil.ReadRegular(path, max)
}

// ReadPublicKeyFile reads and parses a PEM public key file (see ParsePublicKeyPEM).
func ReadPublicKeyFile(path string) (pemBytes []byte, keyID string, err error) {
	b, err := readLimited(path, maxKeyFile)
	if err != nil {
		return nil, "", fmt.Errorf("read public key: %w", err)
	}
	_, id, err := ParsePublicKeyPEM(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return b, id, nil
}
