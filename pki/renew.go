package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ServerRenewBefore is how long before its NotAfter RenewServerCertificate
// replaces the server certificate by default.
const ServerRenewBefore = 30 * 24 * time.Hour

// ErrIssuingCAExpiring reports that the issuing CA has expired, or expires
// within the renewal window, so that a renewed server certificate would be
// due for renewal the moment it is issued. Only rotating the deployment's CA
// fixes it; the server never does that itself.
var ErrIssuingCAExpiring = errors.New("issuing CA expired or about to expire: rotate it with `vigil-server ca rotate-issuing`")

// RenewServerCertificate renews server.pem when it has expired or expires
// within before of now (before <= 0 means ServerRenewBefore): the issuing CA
// signs a new certificate for the same subject and SANs as the current one
// and the same key (server.key is not touched), valid for ServerTTL but not
// past the issuing CA's NotAfter, and server.pem is replaced atomically
// (temporary file, fsync, rename; same mode). Agents accept the renewed
// certificate: it chains to the same issuing CA and root.
//
// It returns the certificate to serve (as ServerCertificate) and whether it
// renewed. A server.pem or server.key that does not load, or a leaf not
// signed by the issuing CA, is an error; so is an issuing CA that has
// expired or expires within before (wrapping ErrIssuingCAExpiring). On any
// error server.pem is left as it was.
func (c *CA) RenewServerCertificate(now time.Time, before time.Duration) (cert tls.Certificate, renewed bool, err error) {
	if before <= 0 {
		before = ServerRenewBefore
	}
	c.renewMu.Lock()
	defer c.renewMu.Unlock()
	// `vigil-server ca rotate-issuing` may run meanwhile: between reading
	// server.pem and writing it, its rotated server.pem would be replaced by
	// one from the issuing CA this server loaded (the retired one), which
	// the next start refuses. Its lock keeps it out; after it, the leaf is
	// not signed by c.Issuing and nothing is written.
	unlock, err := lockDir(c.dir)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate: %w", err)
	}
	defer unlock()
	path := filepath.Join(c.dir, ServerCertFile)
	leaf, key, err := c.loadServer()
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate: %w", err)
	}
	due := now.Add(before)
	if due.Before(leaf.NotAfter) {
		return c.serverChain(leaf, key), false, nil
	}
	if !due.Before(c.Issuing.NotAfter) {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate (expires %s): %w: the issuing CA expires %s, within the renewal window of %s",
			leaf.NotAfter.UTC().Format(time.RFC3339), ErrIssuingCAExpiring, c.Issuing.NotAfter.UTC().Format(time.RFC3339), before)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate: %w", err)
	}
	names := serverNames{
		Subject:     leaf.Subject,
		RawSubject:  leaf.RawSubject,
		DNSNames:    leaf.DNSNames,
		IPAddresses: leaf.IPAddresses,
		URIs:        leaf.URIs,
	}
	der, fresh, err := issueServer(names, &key.PublicKey, now, c.Issuing, c.issuingKey)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate: %w", err)
	}
	data, err := encodeCerts([][]byte{der, c.Issuing.Raw})
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate: %w", err)
	}
	write := c.writeFile
	if write == nil {
		write = func(path string, data []byte, perm os.FileMode) error { return writeAtomic(path, data, perm, true) }
	}
	if err := write(path, data, fi.Mode().Perm()); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("renew server certificate: write %s: %w", ServerCertFile, err)
	}
	return c.serverChain(fresh, key), true, nil
}
