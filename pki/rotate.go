package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// Staged files of a rotation in progress. RotateIssuing writes all three
// (each atomically) before it renames any of them into place, so that a
// rotation cut short can be finished or discarded by the next run.
const (
	stagedIssuingKey  = ".rotate-" + IssuingKeyFile
	stagedIssuingCert = ".rotate-" + IssuingCertFile
	stagedServerCert  = ".rotate-" + ServerCertFile
)

// RotateMinRootLeft is how long the root CA must still be valid for a
// rotation: an issuing CA never outlives its root, and one that ended
// within a month would need rotating again at once. Past that point only a
// new deployment (a new root, agents enrolled again) helps.
const RotateMinRootLeft = 30 * 24 * time.Hour

// ErrRootExpiring reports a root CA too close to its end to sign another
// issuing CA.
var ErrRootExpiring = errors.New("root CA expired or about to expire: a new deployment is needed")

// Rotation describes a finished issuing-CA rotation.
type Rotation struct {
	Old     *x509.Certificate // the retired issuing CA (nil if it did not load)
	Issuing *x509.Certificate // the new issuing CA
	Server  *x509.Certificate // the server certificate, re-issued by it
	Resumed bool              // an interrupted rotation was finished instead
}

// RotateIssuing replaces the deployment's issuing CA in dir with a new one:
// a new key, signed by the root (rootKeyPath; "" means dir/root.key), valid
// for IssuingTTL but not past the root, with the same trust domain and name
// constraint. The server certificate is re-issued by it for the same names
// and key. The old issuing key is deleted: nothing needs it, since agent
// certificates it signed carry their chain and stay valid (they chain to the
// same root) until they end or are renewed, and a key kept online could
// still sign certificates that every agent trusts.
//
// Agents are not touched: they trust the root, so the new server chain is
// accepted as is, and each agent's next renewal returns a certificate from
// the new issuing CA. A running server keeps the CA it loaded: restart it.
//
// The three files change through staged copies (written and fsynced first,
// then renamed one by one), so a crash leaves a state the next call
// finishes (Rotation.Resumed). Only the root certificate and key, server.pem
// (for its names) and server.key must load; the current issuing CA may be
// damaged or expired, so this also repairs a deployment whose issuing CA
// ended. Rotations, and a running server's renewal of server.pem, take
// turns (a flock of dir).
func RotateIssuing(dir, rootKeyPath string, now time.Time) (*Rotation, error) {
	if rootKeyPath == "" {
		rootKeyPath = filepath.Join(dir, RootKeyFile)
	}
	// Rotations share the staged file names: one at a time per directory.
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	defer unlock()
	root, err := readRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	if r, err := resumeRotation(dir, root); err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	} else if r != nil {
		return r, nil
	}
	if !now.Add(RotateMinRootLeft).Before(root.NotAfter) {
		return nil, fmt.Errorf("rotate issuing CA: %w (the root ends %s)", ErrRootExpiring, root.NotAfter.UTC().Format(time.RFC3339))
	}
	rootKey, err := ReadKey(rootKeyPath)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: root key: %w", err)
	}
	if !rootKey.PublicKey.Equal(root.PublicKey) {
		return nil, fmt.Errorf("rotate issuing CA: %s is not the key of the root CA in %s", rootKeyPath, RootCertFile)
	}
	td, err := caTrustDomain(root)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: root: %w", err)
	}
	srvCerts, err := ReadCerts(filepath.Join(dir, ServerCertFile))
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	srvKey, err := ReadKey(filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	leaf := srvCerts[0]
	if !srvKey.PublicKey.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("rotate issuing CA: %s does not match %s", ServerKeyFile, ServerCertFile)
	}
	var old *x509.Certificate
	if c, err := ReadCerts(filepath.Join(dir, IssuingCertFile)); err == nil {
		old = c[0]
	}

	tdURI, err := url.Parse(trustDomainURI(td))
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	issKey, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	issDER, iss, err := sign(issuingTemplate(td, tdURI, now, minTime(now.Add(IssuingTTL), root.NotAfter)), root, &issKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	names := serverNames{Subject: leaf.Subject, RawSubject: leaf.RawSubject, DNSNames: leaf.DNSNames,
		IPAddresses: leaf.IPAddresses, URIs: leaf.URIs}
	srvDER, srv, err := issueServer(names, &srvKey.PublicKey, now, iss, issKey)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	keyPEM, err := encodeKey(issKey)
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	issPEM, err := encodeCerts([][]byte{issDER})
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	srvPEM, err := encodeCerts([][]byte{srvDER, issDER})
	if err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w", err)
	}
	srvMode := os.FileMode(0o644)
	if fi, err := os.Stat(filepath.Join(dir, ServerCertFile)); err == nil {
		srvMode = fi.Mode().Perm()
	}
	staged := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{stagedIssuingKey, keyPEM, 0o600},
		{stagedIssuingCert, issPEM, 0o644},
		{stagedServerCert, srvPEM, srvMode},
	}
	for _, f := range staged {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.perm, true); err != nil {
			removeStaged(dir)
			return nil, fmt.Errorf("rotate issuing CA: stage %s: %w", f.name, err)
		}
	}
	if err := commitStaged(dir); err != nil {
		return nil, fmt.Errorf("rotate issuing CA: %w (run it again to finish)", err)
	}
	return &Rotation{Old: old, Issuing: iss, Server: srv}, nil
}

// issuingTemplate is the issuing CA of trust domain td: it can sign leaf
// certificates only (MaxPathLen 0), naming td only.
func issuingTemplate(td string, tdURI *url.URL, now, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Vigil"}, CommonName: "Vigil Issuing CA " + td},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{tdURI},
		// Agent identities can only name this trust domain.
		PermittedURIDomains: []string{td},
	}
}

func readRoot(dir string) (*x509.Certificate, error) {
	roots, err := ReadCerts(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, err
	}
	if len(roots) != 1 || !roots[0].IsCA {
		return nil, fmt.Errorf("%s must hold one CA certificate", RootCertFile)
	}
	return roots[0], nil
}

// resumeRotation finishes a rotation that staged its files and was cut
// short, possibly after renaming some of them. The files in force are then
// each staged copy where one is left, else the current file; if they form
// a consistent CA (key matches certificate, issuing CA signed by the root,
// server certificate signed by it and matching server.key) the remaining
// copies are renamed into place. Otherwise the staging itself was cut short
// (nothing was renamed yet): the copies are discarded and it returns nil.
func resumeRotation(dir string, root *x509.Certificate) (*Rotation, error) {
	pick := func(staged, cur string) (string, bool) {
		if _, err := os.Lstat(filepath.Join(dir, staged)); err == nil {
			return filepath.Join(dir, staged), true
		}
		return filepath.Join(dir, cur), false
	}
	keyPath, k := pick(stagedIssuingKey, IssuingKeyFile)
	certPath, c := pick(stagedIssuingCert, IssuingCertFile)
	srvPath, s := pick(stagedServerCert, ServerCertFile)
	if !k && !c && !s {
		return nil, nil
	}
	iss, srv, err := consistentSet(root, keyPath, certPath, srvPath, filepath.Join(dir, ServerKeyFile))
	if err != nil {
		removeStaged(dir)
		return nil, nil
	}
	if err := commitStaged(dir); err != nil {
		return nil, fmt.Errorf("finish an interrupted rotation: %w", err)
	}
	return &Rotation{Issuing: iss, Server: srv, Resumed: true}, nil
}

func consistentSet(root *x509.Certificate, keyPath, certPath, srvPath, srvKeyPath string) (*x509.Certificate, *x509.Certificate, error) {
	key, err := ReadKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	certs, err := ReadCerts(certPath)
	if err != nil {
		return nil, nil, err
	}
	iss := certs[0]
	if !key.PublicKey.Equal(iss.PublicKey) || iss.CheckSignatureFrom(root) != nil {
		return nil, nil, errors.New("issuing key, certificate and root do not match")
	}
	srvs, err := ReadCerts(srvPath)
	if err != nil {
		return nil, nil, err
	}
	srvKey, err := ReadKey(srvKeyPath)
	if err != nil {
		return nil, nil, err
	}
	if srvs[0].CheckSignatureFrom(iss) != nil || !srvKey.PublicKey.Equal(srvs[0].PublicKey) {
		return nil, nil, errors.New("server certificate does not match the issuing CA or server.key")
	}
	return iss, srvs[0], nil
}

// commitStaged renames the staged files that are left into place, key
// first, then fsyncs the directory.
func commitStaged(dir string) error {
	for _, p := range [][2]string{
		{stagedIssuingKey, IssuingKeyFile},
		{stagedIssuingCert, IssuingCertFile},
		{stagedServerCert, ServerCertFile},
	} {
		err := os.Rename(filepath.Join(dir, p[0]), filepath.Join(dir, p[1]))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("install %s: %w", p[1], err)
		}
	}
	return fsutil.SyncDir(dir)
}

// rotationStaged reports whether staged files of a rotation are in dir.
func rotationStaged(dir string) bool {
	for _, n := range []string{stagedIssuingKey, stagedIssuingCert, stagedServerCert} {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

func removeStaged(dir string) {
	for _, n := range []string{stagedIssuingKey, stagedIssuingCert, stagedServerCert} {
		_ = os.Remove(filepath.Join(dir, n))
	}
}

// lockDir takes an exclusive flock(2) of the deployment directory itself
// (no lock file is left behind), waiting for another holder: a rotation
// takes milliseconds. It excludes other processes and, as each call opens
// the directory anew, other goroutines of this one. unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil // closing the only descriptor releases the lock
}
