package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// maxPEMFile bounds the size of key and certificate files that are read.
const maxPEMFile = 1 << 20

// NewKey makes a new ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return key, nil
}

// NewCSR returns a DER certificate signing request for key with the given
// subject common name. The CA ignores everything in it but the public key.
func NewCSR(key *ecdsa.PrivateKey, commonName string) ([]byte, error) {
	if key == nil {
		return nil, errors.New("create CSR: nil key")
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: commonName},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return der, nil
}

// WriteKey writes key to path as a PKCS#8 PEM block ("PRIVATE KEY"), mode
// 0600, atomically: a temporary file in the same directory is written,
// fsynced and renamed over path.
func WriteKey(path string, key *ecdsa.PrivateKey) error {
	data, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := writeAtomic(path, data, 0o600, true); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("nil key")
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key curve %s, want P-256", key.Curve.Params().Name)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ReadKey reads an ECDSA P-256 private key from a PEM file ("EC PRIVATE KEY"
// or PKCS#8 "PRIVATE KEY"). It refuses a file that group or others may read
// or write (mode&0077 != 0): fix it with chmod 600. Only a regular file is
// read (a symbolic link to one is followed), at most maxPEMFile bytes, and
// the mode checked is that of the file opened: a named pipe (in the agent's
// state directory, which its service user can write, for one) is refused
// instead of holding the caller for good.
func ReadKey(path string) (*ecdsa.PrivateKey, error) {
	f, fi, err := fsutil.OpenRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("read key %s: mode %#o lets group or others access it; want 0600", path, perm)
	}
	if fi.Size() > maxPEMFile {
		return nil, fmt.Errorf("read key %s: file larger than %d bytes: %w", path, maxPEMFile, fsutil.ErrTooLarge)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("read key %s: file larger than %d bytes: %w", path, maxPEMFile, fsutil.ErrTooLarge)
	}
	key, err := parseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	return key, nil
}

func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key *ecdsa.PrivateKey
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse EC private key: %w", err)
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is %T, want ECDSA P-256", k)
		}
		key = ek
	default:
		return nil, fmt.Errorf("PEM block %q, want EC PRIVATE KEY or PRIVATE KEY", block.Type)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key curve %s, want P-256", key.Curve.Params().Name)
	}
	return key, nil
}

// WriteCerts writes DER certificates to path as PEM "CERTIFICATE" blocks in
// the given order (leaf first), mode 0644, atomically.
func WriteCerts(path string, der [][]byte) error {
	data, err := encodeCerts(der)
	if err != nil {
		return fmt.Errorf("write certificates %s: %w", path, err)
	}
	if err := writeAtomic(path, data, 0o644, true); err != nil {
		return fmt.Errorf("write certificates %s: %w", path, err)
	}
	return nil
}

func encodeCerts(der [][]byte) ([]byte, error) {
	if len(der) == 0 {
		return nil, errors.New("no certificates")
	}
	var out []byte
	for i, d := range der {
		if _, err := x509.ParseCertificate(d); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	return out, nil
}

// ReadCerts reads the PEM "CERTIFICATE" blocks of path, in file order. A file
// with no certificate or with a PEM block of another type is an error. Only a
// regular file is read (a symbolic link to one is followed), at most
// maxPEMFile bytes: a named pipe is refused instead of holding the caller.
func ReadCerts(path string) ([]*x509.Certificate, error) {
	data, err := fsutil.ReadRegular(path, maxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("read certificates %s: %w", path, err)
	}
	return certs, nil
}

func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// writeAtomic writes data to path through a temporary file in the same
// directory that is fsynced, given mode perm and then renamed over path
// (replace) or hard-linked to path, which fails if path exists (!replace).
// The directory is fsynced afterwards.
func writeAtomic(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil || !replace {
			_ = os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmpName, path)
	} else {
		err = os.Link(tmpName, path)
	}
	if err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}
