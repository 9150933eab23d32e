package packaging

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

// Names of the release metadata files.
const (
	ChecksumsFile = "SHA256SUMS"
	SignatureFile = "SHA256SUMS.sig"
)

// maxChecksums bounds a SHA256SUMS file read back for verification.
const maxChecksums = 1 << 20

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("checksum: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteChecksums writes dir/SHA256SUMS for the named files of dir, sorted,
// in the format of sha256sum(1) (`sha256sum -c SHA256SUMS` checks it).
func WriteChecksums(dir string, names []string) error {
	names = append([]string(nil), names...)
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		if !validName(n) {
			return fmt.Errorf("write checksums: bad file name %q", n)
		}
		sum, err := fileSHA256(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, n)
	}
	if err := os.WriteFile(filepath.Join(dir, ChecksumsFile), b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write checksums: %w", err)
	}
	return nil
}

// VerifyChecksums checks every file listed in dir/SHA256SUMS.
func VerifyChecksums(dir string) error {
	data, err := readLimited(filepath.Join(dir, ChecksumsFile), maxChecksums)
	if err != nil {
		return fmt.Errorf("verify checksums: %w", err)
	}
	sums, err := parseChecksums(data)
	if err != nil {
		return fmt.Errorf("verify checksums: %w", err)
	}
	for _, c := range sums {
		got, err := fileSHA256(filepath.Join(dir, c.Name))
		if err != nil {
			return fmt.Errorf("verify checksums: %w", err)
		}
		if got != c.SHA256 {
			return fmt.Errorf("verify checksums: %s: sha256 %s, SHA256SUMS says %s", c.Name, got, c.SHA256)
		}
	}
	return nil
}

// checksum is one line of a SHA256SUMS file.
type checksum struct {
	SHA256 string // 64 lowercase hex digits
	Name   string // a plain file name in the release folder
}

// parseChecksums parses a SHA256SUMS file as WriteChecksums writes it:
// lines "SUM  NAME\n" (sha256sum's text mode), SUM 64 lowercase hex digits,
// NAME a plain file name (no folder, not "." or "..", no control
// characters or backslash), each name once, and at least one line. Every
// line counts: any that is not such an entry (an empty line, a CRLF line
// end, a binary-mode "SUM *NAME", a missing final newline) is an error
// naming it, so that nothing listed goes unverified.
func parseChecksums(data []byte) ([]checksum, error) {
	if len(data) == 0 {
		return nil, errors.New("empty SHA256SUMS")
	}
	if data[len(data)-1] != '\n' {
		return nil, errors.New("SHA256SUMS does not end with a newline")
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	out := make([]checksum, 0, len(lines))
	seen := make(map[string]bool, len(lines))
	for i, l := range lines {
		sum, name, ok := strings.Cut(l, "  ")
		if !ok || !validSum(sum) || !validName(name) {
			return nil, fmt.Errorf("line %d: malformed %.100q (want 64 lowercase hex digits, two spaces, a file name)", i+1, l)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: %.100q listed twice", i+1, name)
		}
		seen[name] = true
		out = append(out, checksum{SHA256: sum, Name: name})
	}
	return out, nil
}

func validSum(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// validName accepts what WriteChecksums writes: a plain file name.
func validName(n string) bool {
	return n != "" && n != "." && n != ".." && n == filepath.Base(n) && !strings.ContainsAny(n, "/\\") &&
		!strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) && utf8.ValidString(n)
}

func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, max)
	}
	return b, nil
}

// ParseSigningKey parses an unencrypted ECDSA private key in PEM: "EC
// PRIVATE KEY" (SEC 1, as `openssl ecparam -genkey` writes) or "PRIVATE KEY"
// (PKCS #8).
func ParseSigningKey(pemBytes []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("signing key: no PEM block")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signing key: %T, want an ECDSA key", k)
		}
		return ek, nil
	default:
		return nil, fmt.Errorf("signing key: PEM type %q, want an unencrypted \"EC PRIVATE KEY\" or \"PRIVATE KEY\"", block.Type)
	}
}

// SignFile signs path with key and writes path+".sig": the base64 (one
// line) of an ASN.1 DER ECDSA signature over the SHA-256 of the file. This
// is the format of `cosign sign-blob` and, once base64-decoded, of
// `openssl dgst -sha256 -sign` (see installer/README.md to verify).
func SignFile(key *ecdsa.PrivateKey, path string) error {
	data, err := readLimited(path, maxChecksums)
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	digest := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	out := base64.StdEncoding.EncodeToString(sig) + "\n"
	if err := os.WriteFile(path+".sig", []byte(out), 0o644); err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	return nil
}

// ParsePublicKey parses a PEM "PUBLIC KEY" (PKIX) holding an ECDSA key.
func ParsePublicKey(pemBytes []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("public key: want a PEM \"PUBLIC KEY\" block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %T, want ECDSA", k)
	}
	return ek, nil
}

// VerifyFile checks path+".sig" (written by SignFile) against pub.
func VerifyFile(pub *ecdsa.PublicKey, path string) error {
	data, err := readLimited(path, maxChecksums)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	sigText, err := readLimited(path+".sig", 4096)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigText)))
	if err != nil {
		return fmt.Errorf("verify %s: signature is not base64: %w", path, err)
	}
	digest := sha256.Sum256(data)
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return fmt.Errorf("verify %s: bad signature", path)
	}
	return nil
}
