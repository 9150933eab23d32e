package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrBadPin reports a CA pin that is not "sha256:" followed by 64 lowercase
// hex digits.
var ErrBadPin = errors.New("bad CA pin")

const pinPrefix = "sha256:"

// SPKIPin returns the pin of cert: "sha256:" and the lowercase hex SHA-256 of
// its DER SubjectPublicKeyInfo.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin returns the 32-byte SHA-256 digest of a pin written as
// "sha256:<64 lowercase hex digits>".
func ParsePin(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, pinPrefix)
	if !ok {
		return nil, fmt.Errorf("parse pin: %w: want prefix %q", ErrBadPin, pinPrefix)
	}
	if len(rest) != 2*sha256.Size {
		return nil, fmt.Errorf("parse pin: %w: %d hex digits, want %d", ErrBadPin, len(rest), 2*sha256.Size)
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return nil, fmt.Errorf("parse pin: %w: want lowercase hex digits", ErrBadPin)
		}
	}
	b, err := hex.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("parse pin: %w: %w", ErrBadPin, err)
	}
	return b, nil
}
