// Package token makes, parses and verifies Vigil's secret tokens (enrollment
// tokens, API tokens).
//
// A token is "<prefix>_<id>.<secret>", e.g. "vge_k3j2h4m9qa.<43 chars>": the
// prefix names the token kind, the id (10 characters of [a-z0-9]) is public
// and is the lookup key, and the secret is 32 random bytes in unpadded
// base64url. Only SHA-256(secret) is stored; Verify compares in constant time.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed reports a token that does not have the expected format.
var ErrMalformed = errors.New("malformed token")

const (
	// IDLen is the length of a token id.
	IDLen = 10
	// SecretLen is the number of random bytes in a secret.
	SecretLen = 32
	// maxPrefixLen bounds a prefix.
	maxPrefixLen = 16
	idAlphabet   = "abcdefghijklmnopqrstuvwxyz0123456789"
)

var secretEncoding = base64.RawURLEncoding.Strict()

// encodedSecretLen is the length of the base64url secret (43).
var encodedSecretLen = secretEncoding.EncodedLen(SecretLen)

// validPrefix reports whether p is [a-z][a-z0-9]{0,15}.
func validPrefix(p string) bool {
	if len(p) == 0 || len(p) > maxPrefixLen || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if c := p[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// New makes a token with the given prefix ([a-z][a-z0-9]{0,15}). It returns
// the plaintext (shown once to the user), the public id and the hash of the
// secret to store.
func New(prefix string) (plaintext, id string, hash []byte, err error) {
	if !validPrefix(prefix) {
		return "", "", nil, fmt.Errorf("new token: invalid prefix %q", prefix)
	}
	id, err = randomID()
	if err != nil {
		return "", "", nil, fmt.Errorf("new token: %w", err)
	}
	secret := make([]byte, SecretLen)
	if _, err := rand.Read(secret); err != nil {
		return "", "", nil, fmt.Errorf("new token: %w", err)
	}
	plaintext = prefix + "_" + id + "." + secretEncoding.EncodeToString(secret)
	return plaintext, id, Hash(secret), nil
}

// randomID returns IDLen characters of idAlphabet, uniformly (rejection
// sampling).
func randomID() (string, error) {
	const limit = 256 - 256%len(idAlphabet)
	out := make([]byte, 0, IDLen)
	var buf [32]byte
	for len(out) < IDLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("random id: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < IDLen {
				out = append(out, idAlphabet[int(b)%len(idAlphabet)])
			}
		}
	}
	return string(out), nil
}

// Parse splits a token of the given prefix into its id and secret. Any
// deviation from the format is an error wrapping ErrMalformed; the error
// never contains the secret.
func Parse(plaintext, prefix string) (id string, secret []byte, err error) {
	if !validPrefix(prefix) {
		return "", nil, fmt.Errorf("parse token: invalid prefix %q", prefix)
	}
	want := len(prefix) + 1 + IDLen + 1 + encodedSecretLen
	if len(plaintext) != want {
		return "", nil, fmt.Errorf("parse token: %w: length %d, want %d", ErrMalformed, len(plaintext), want)
	}
	rest, ok := strings.CutPrefix(plaintext, prefix+"_")
	if !ok {
		return "", nil, fmt.Errorf("parse token: %w: want prefix %q", ErrMalformed, prefix+"_")
	}
	id, enc := rest[:IDLen], rest[IDLen:]
	for i := 0; i < len(id); i++ {
		if strings.IndexByte(idAlphabet, id[i]) < 0 {
			return "", nil, fmt.Errorf("parse token: %w: bad character in id", ErrMalformed)
		}
	}
	enc, ok = strings.CutPrefix(enc, ".")
	if !ok {
		return "", nil, fmt.Errorf("parse token: %w: no '.' after the id", ErrMalformed)
	}
	secret, err = secretEncoding.DecodeString(enc)
	if err != nil || len(secret) != SecretLen {
		return "", nil, fmt.Errorf("parse token: %w: secret is not %d bytes of unpadded base64url", ErrMalformed, SecretLen)
	}
	return id, secret, nil
}

// Hash returns SHA-256(secret), what is stored for a token.
func Hash(secret []byte) []byte {
	sum := sha256.Sum256(secret)
	return sum[:]
}

// Verify reports whether secret hashes to hash, in constant time.
func Verify(hash, secret []byte) bool {
	sum := sha256.Sum256(secret)
	return len(hash) == sha256.Size && subtle.ConstantTimeCompare(sum[:], hash) == 1
}
