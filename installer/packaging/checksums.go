package packaging

import (
	"bufio"
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
		if n != filepath.Base(n) || strings.ContainsAny(n, "\n\\") {
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
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 || name != filepath.Base(name) {
			return fmt.Errorf("verify checksums: malformed line %q", sc.Text())
		}
		got, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("verify checksums: %w", err)
		}
		if got != sum {
			return fmt.Errorf("verify checksums: %s: sha256 %s, SHA256SUMS says %s", name, got, sum)
		}
		n++
	}
	if n == 0 {
		return errors.New("verify checksums: empty SHA256SUMS")
	}
	return nil
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
