// Package state owns the agent's state directory: its identity
// (identity.json), its key and certificate (agent.key, agent.pem), the
// deployment's root CA (ca.pem) and the spool file's path. It loads them as
// TLS credentials and replaces key and certificate after a renewal so that a
// crash at any point leaves a matching pair.
package state

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/pki"
)

// File names in the state directory.
const (
	KeyFile      = "agent.key"
	CertFile     = "agent.pem"
	CAFile       = "ca.pem"
	IdentityFile = "identity.json"
	SpoolFile    = "spool.db"
)

// DefaultDir is the state directory of an installed agent.
const DefaultDir = "/var/lib/vigil"

// maxIdentityFile bounds identity.json.
const maxIdentityFile = 64 << 10

// ErrNotEnrolled reports a state directory without an identity.
var ErrNotEnrolled = errors.New("agent not enrolled")

// Identity is identity.json: who the agent is and where its server is.
type Identity struct {
	AgentID     string `json:"agent_id"`
	Entity      string `json:"entity"`
	Server      string `json:"server"`
	TrustDomain string `json:"trust_domain"`
}

// Validate checks the identity's fields.
func (id *Identity) Validate() error {
	switch {
	case !pki.ValidName(id.AgentID):
		return fmt.Errorf("identity: invalid agent_id %q", id.AgentID)
	case !pki.ValidName(id.Entity):
		return fmt.Errorf("identity: invalid entity %q", id.Entity)
	case !pki.ValidTrustDomain(id.TrustDomain):
		return fmt.Errorf("identity: invalid trust_domain %q", id.TrustDomain)
	}
	if _, _, err := SplitServer(id.Server); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// ParseIdentity decodes and validates identity.json content.
func ParseIdentity(data []byte) (*Identity, error) {
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("parse identity: %d bytes, limit %d", len(data), maxIdentityFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var id Identity
	if err := dec.Decode(&id); err != nil {
		return nil, fmt.Errorf("parse identity: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse identity: trailing data")
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("parse identity: %w", err)
	}
	return &id, nil
}

// SplitServer splits "host:port" and checks both parts.
func SplitServer(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("server %q: want HOST:PORT", s)
	}
	host, port = s[:i], s[i+1:]
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || strings.ContainsAny(host, " /@\x00") {
		return "", "", fmt.Errorf("server %q: bad host", s)
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", "", fmt.Errorf("server %q: bad port", s)
		}
	}
	if len(port) > 5 {
		return "", "", fmt.Errorf("server %q: bad port", s)
	}
	return host, port, nil
}

// Dir is a state directory.
type Dir string

// Path returns the path of a file in the directory.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// Enrolled reports whether the directory holds an identity or a certificate.
func (d Dir) Enrolled() bool {
	for _, n := range []string{IdentityFile, CertFile} {
		if _, err := os.Stat(d.Path(n)); err == nil {
			return true
		}
	}
	return false
}

// ReadIdentity reads identity.json (ErrNotEnrolled if missing). Only a
// regular file is read, at most maxIdentityFile bytes, and never through a
// symbolic link (the agent writes it itself, by rename): a named pipe there
// would otherwise hold the agent's start and `vigil-agent status` for good.
func (d Dir) ReadIdentity() (*Identity, error) {
	data, err := fsutil.ReadRegularNoFollow(d.Path(IdentityFile), maxIdentityFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", d.Path(IdentityFile), ErrNotEnrolled)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	id, err := ParseIdentity(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Path(IdentityFile), err)
	}
	return id, nil
}

// WriteIdentity writes identity.json atomically (0600).
func (d Dir) WriteIdentity(id *Identity) error {
	if err := id.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	return writeAtomic(d.Path(IdentityFile), append(data, '\n'), 0o600)
}

// Credentials are what the uplink needs for mTLS.
type Credentials struct {
	Identity *Identity
	Cert     tls.Certificate // chain leaf, issuing; Leaf set
	Roots    *x509.CertPool  // the deployment's root CA only
	Root     *x509.Certificate
}

// NotBefore and NotAfter of the agent certificate.
func (c *Credentials) NotBefore() time.Time { return c.Cert.Leaf.NotBefore }

// NotAfter is the agent certificate's expiry.
func (c *Credentials) NotAfter() time.Time { return c.Cert.Leaf.NotAfter }

// RenewAt is when 2/3 of the certificate's lifetime has passed.
func (c *Credentials) RenewAt() time.Time {
	nb, na := c.NotBefore(), c.NotAfter()
	return nb.Add(na.Sub(nb) * 2 / 3)
}

// credMu serialises LoadCredentials and ReplaceCredentials within the
// process: the uplink renews while the updater's fetcher loads the
// credentials, and a load in the middle of a renewal would take its staged
// files for an interrupted renewal (recoverRenewal) and discard or install
// them under it, or read a key and a certificate that do not match.
var credMu sync.Mutex

// LoadCredentials finishes an interrupted renewal if needed, then loads the
// identity, key, certificate chain and root CA, and checks that they match.
func (d Dir) LoadCredentials() (*Credentials, error) {
	credMu.Lock()
	defer credMu.Unlock()
	if err := d.recoverRenewal(); err != nil {
		return nil, err
	}
	id, err := d.ReadIdentity()
	if err != nil {
		return nil, err
	}
	key, err := pki.ReadKey(d.Path(KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	chain, err := pki.ReadCerts(d.Path(CertFile))
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	roots, err := pki.ReadCerts(d.Path(CAFile))
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	if len(chain) == 0 || len(roots) != 1 {
		return nil, fmt.Errorf("load credentials: %d certificates in %s, %d in %s", len(chain), CertFile, len(roots), CAFile)
	}
	if !KeyMatches(key, chain[0]) {
		return nil, fmt.Errorf("load credentials: %s does not match %s", KeyFile, CertFile)
	}
	ident, err := pki.IdentityFromCert(chain[0], id.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	if ident.AgentID != id.AgentID || ident.Entity != id.Entity {
		return nil, fmt.Errorf("load credentials: certificate names %s, identity.json agent %s of %s", ident, id.AgentID, id.Entity)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &Credentials{Identity: id, Cert: cert, Roots: pool, Root: roots[0]}, nil
}

// KeyMatches reports whether cert carries key's public key.
func KeyMatches(key *ecdsa.PrivateKey, cert *x509.Certificate) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && key.PublicKey.Equal(pub)
}

// ReplaceCredentials installs a renewed key and chain. Protocol: write
// agent.key.new and agent.pem.new (each fsynced), then rename the key, then
// the certificate. LoadCredentials completes an interrupted sequence, so the
// directory always yields a matching pair.
func (d Dir) ReplaceCredentials(key *ecdsa.PrivateKey, chainDER [][]byte) error {
	if len(chainDER) == 0 {
		return errors.New("replace credentials: empty chain")
	}
	credMu.Lock()
	defer credMu.Unlock()
	leaf, err := x509.ParseCertificate(chainDER[0])
	if err != nil {
		return fmt.Errorf("replace credentials: %w", err)
	}
	if !KeyMatches(key, leaf) {
		return errors.New("replace credentials: certificate does not carry the new key")
	}
	newKey, newCert := d.Path(KeyFile)+".new", d.Path(CertFile)+".new"
	_ = os.Remove(newKey)
	_ = os.Remove(newCert)
	if err := pki.WriteKey(newKey, key); err != nil {
		return fmt.Errorf("replace credentials: %w", err)
	}
	if err := pki.WriteCerts(newCert, chainDER); err != nil {
		return fmt.Errorf("replace credentials: %w", err)
	}
	return d.finishRenewal()
}

// finishRenewal renames agent.key.new and agent.pem.new into place.
func (d Dir) finishRenewal() error {
	newKey, newCert := d.Path(KeyFile)+".new", d.Path(CertFile)+".new"
	if err := os.Rename(newKey, d.Path(KeyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("install renewed key: %w", err)
	}
	if err := os.Rename(newCert, d.Path(CertFile)); err != nil {
		return fmt.Errorf("install renewed certificate: %w", err)
	}
	return fsutil.SyncDir(string(d))
}

// DiscardRenewal removes the staged files of an interrupted renewal
// (enrollment calls it before it writes a new identity: LoadCredentials
// would otherwise install the old identity's staged pair over the new one).
func (d Dir) DiscardRenewal() error {
	credMu.Lock()
	defer credMu.Unlock()
	for _, p := range []string{d.Path(KeyFile) + ".new", d.Path(CertFile) + ".new"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("discard staged renewal: %w", err)
		}
	}
	return nil
}

// recoverRenewal completes or discards an interrupted ReplaceCredentials.
func (d Dir) recoverRenewal() error {
	newKey, newCert := d.Path(KeyFile)+".new", d.Path(CertFile)+".new"
	_, errCert := os.Stat(newCert)
	if errors.Is(errCert, os.ErrNotExist) {
		// Key written but not the certificate: the old pair is intact.
		_ = os.Remove(newKey)
		return nil
	}
	chain, err := pki.ReadCerts(newCert)
	if err != nil || len(chain) == 0 {
		_ = os.Remove(newKey)
		_ = os.Remove(newCert)
		return nil
	}
	// Which key goes with the new certificate: the staged one or the
	// already renamed one?
	keyPath := newKey
	if _, err := os.Stat(newKey); errors.Is(err, os.ErrNotExist) {
		keyPath = d.Path(KeyFile)
	}
	key, err := pki.ReadKey(keyPath)
	if err != nil || !KeyMatches(key, chain[0]) {
		_ = os.Remove(newKey)
		_ = os.Remove(newCert)
		return nil
	}
	return d.finishRenewal()
}

// ParseTrustDomain returns the trust domain of an agent certificate's single
// spiffe URI SAN (validated further by pki.IdentityFromCert).
func ParseTrustDomain(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("certificate has %d URI SANs, want 1", len(cert.URIs))
	}
	u, err := url.Parse(cert.URIs[0].String())
	if err != nil || u.Scheme != "spiffe" || !pki.ValidTrustDomain(u.Host) {
		return "", fmt.Errorf("certificate URI SAN %q is not a spiffe identity", cert.URIs[0])
	}
	return u.Host, nil
}

func writeAtomic(path string, data []byte, perm os.FileMode) error {
	return fsutil.WriteFile(path, data, perm)
}
