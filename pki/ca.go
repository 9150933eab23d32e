package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names in a deployment directory.
const (
	RootCertFile    = "ca.pem"
	RootKeyFile     = "root.key"
	IssuingCertFile = "issuing.pem"
	IssuingKeyFile  = "issuing.key"
	ServerCertFile  = "server.pem"
	ServerKeyFile   = "server.key"
)

// Lifetimes of the certificates.
const (
	RootTTL         = 10 * 365 * 24 * time.Hour
	IssuingTTL      = 5 * 365 * 24 * time.Hour
	ServerTTL       = 365 * 24 * time.Hour
	DefaultAgentTTL = 30 * 24 * time.Hour
	MaxAgentTTL     = 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is set in the past, so that a peer whose
	// clock is slightly behind accepts a fresh certificate.
	ClockSkew = 5 * time.Minute
)

// maxCSRSize bounds the DER CSR accepted by SignAgentCSR.
const maxCSRSize = 16 << 10

// ErrBadCSR reports a CSR that is malformed, badly signed or has a key other
// than ECDSA P-256. The server maps it to wirev1.CodeBadCSR.
var ErrBadCSR = errors.New("bad CSR")

// ErrExists reports that Init found an existing deployment.
var ErrExists = errors.New("deployment PKI already exists")

// CA is a deployment's certificate authority: the root (trusted by agents)
// and the issuing CA, whose key signs agent certificates. It is safe for
// concurrent use.
type CA struct {
	TrustDomain string
	Root        *x509.Certificate
	Issuing     *x509.Certificate

	issuingKey *ecdsa.PrivateKey
	dir        string
	now        func() time.Time

	// renewMu serialises RenewServerCertificate in this process (a pointer:
	// copies of a CA share it).
	renewMu *sync.Mutex
	// writeFile replaces a file atomically; nil means writeAtomic (tests
	// make it fail).
	writeFile func(path string, data []byte, perm os.FileMode) error
}

// Init creates a deployment's PKI in dir (created 0700 if missing): a root CA
// (10 years), an issuing CA signed by it (5 years, MaxPathLen 0) and a server
// certificate (1 year) for dnsNames and ips, signed by the issuing CA. It
// refuses, with an error wrapping ErrExists, to touch a directory that holds
// any of the deployment's files. On failure it removes the files it created.
func Init(dir, trustDomain string, dnsNames []string, ips []net.IP) (err error) {
	if !ValidTrustDomain(trustDomain) {
		return fmt.Errorf("init PKI: %w: trust domain %q", ErrInvalidName, trustDomain)
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return errors.New("init PKI: the server certificate needs at least one DNS name or IP address")
	}
	for _, n := range dnsNames {
		if n == "" || len(n) > 253 || strings.ContainsAny(n, " /:@\x00") {
			return fmt.Errorf("init PKI: %w: DNS name %q", ErrInvalidName, n)
		}
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("init PKI: invalid IP address %v", ip)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("init PKI: %w", err)
	}
	for _, n := range []string{RootCertFile, RootKeyFile, IssuingCertFile, IssuingKeyFile, ServerCertFile, ServerKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return fmt.Errorf("init PKI in %s: %w: %s exists", dir, ErrExists, n)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("init PKI: %w", err)
		}
	}

	now := time.Now()
	tdURI, err := url.Parse(trustDomainURI(trustDomain))
	if err != nil {
		return fmt.Errorf("init PKI: %w", err)
	}

	rootKey, err := NewKey()
	if err != nil {
		return fmt.Errorf("init PKI: %w", err)
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Vigil"}, CommonName: "Vigil Root CA " + trustDomain},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		URIs:                  []*url.URL{tdURI},
	}
	rootDER, root, err := sign(rootTmpl, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("init PKI: root CA: %w", err)
	}

	issKey, err := NewKey()
	if err != nil {
		return fmt.Errorf("init PKI: %w", err)
	}
	issTmpl := issuingTemplate(trustDomain, tdURI, now, now.Add(IssuingTTL))
	issDER, iss, err := sign(issTmpl, root, &issKey.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("init PKI: issuing CA: %w", err)
	}

	srvKey, err := NewKey()
	if err != nil {
		return fmt.Errorf("init PKI: %w", err)
	}
	cn := "vigil-server"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	names := serverNames{
		Subject:     pkix.Name{Organization: []string{"Vigil"}, CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}
	srvDER, _, err := issueServer(names, &srvKey.PublicKey, now, iss, issKey)
	if err != nil {
		return fmt.Errorf("init PKI: %w", err)
	}

	files := []struct {
		name string
		data func() ([]byte, error)
		perm os.FileMode
	}{
		{RootKeyFile, func() ([]byte, error) { return encodeKey(rootKey) }, 0o600},
		{IssuingKeyFile, func() ([]byte, error) { return encodeKey(issKey) }, 0o600},
		{ServerKeyFile, func() ([]byte, error) { return encodeKey(srvKey) }, 0o600},
		{RootCertFile, func() ([]byte, error) { return encodeCerts([][]byte{rootDER}) }, 0o644},
		{IssuingCertFile, func() ([]byte, error) { return encodeCerts([][]byte{issDER}) }, 0o644},
		{ServerCertFile, func() ([]byte, error) { return encodeCerts([][]byte{srvDER, issDER}) }, 0o644},
	}
	var created []string
	defer func() {
		if err != nil {
			for _, p := range created {
				_ = os.Remove(p)
			}
		}
	}()
	for _, f := range files {
		data, err := f.data()
		if err != nil {
			return fmt.Errorf("init PKI: encode %s: %w", f.name, err)
		}
		p := filepath.Join(dir, f.name)
		if err := writeAtomic(p, data, f.perm, false); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("init PKI in %s: %w: %s exists", dir, ErrExists, f.name)
			}
			return fmt.Errorf("init PKI: write %s: %w", f.name, err)
		}
		created = append(created, p)
	}
	return nil
}

// serverNames are what a server certificate names: its subject and SANs.
type serverNames struct {
	Subject pkix.Name
	// RawSubject, when set, is used verbatim instead of Subject (a renewal
	// copies the current certificate's, byte for byte).
	RawSubject  []byte
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
}

// issueServer signs, with the issuing CA (iss, issKey), a server certificate
// for pub and names, valid from now (less ClockSkew) for ServerTTL but never
// past the issuing CA's NotAfter. Init and RenewServerCertificate both use it.
func issueServer(names serverNames, pub *ecdsa.PublicKey, now time.Time, iss *x509.Certificate, issKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject:               names.Subject,
		RawSubject:            names.RawSubject,
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              minTime(now.Add(ServerTTL), iss.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names.DNSNames,
		IPAddresses:           names.IPAddresses,
		URIs:                  names.URIs,
	}
	der, cert, err := sign(tmpl, iss, pub, issKey)
	if err != nil {
		return nil, nil, fmt.Errorf("server certificate: %w", err)
	}
	return der, cert, nil
}

// sign creates a certificate from tmpl with a random 128-bit serial, signed
// by signer (self-signed when parent is nil).
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new certificate: %w", err)
	}
	return der, cert, nil
}

// randomSerial returns a random, positive, non-zero 128-bit serial number.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// LoadCA loads the CA of the deployment in dir: ca.pem, issuing.pem and
// issuing.key (the root key is not needed). It checks that the issuing CA is
// signed by the root and that the key matches; the trust domain is read from
// the CA certificates' URI SAN.
func LoadCA(dir string) (*CA, error) {
	ca, err := loadCA(dir)
	if err != nil && rotationStaged(dir) {
		return nil, fmt.Errorf("%w (an issuing-CA rotation was interrupted: run `vigil-server ca rotate-issuing` again to finish it)", err)
	}
	return ca, err
}

func loadCA(dir string) (*CA, error) {
	roots, err := ReadCerts(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("load CA: %s holds %d certificates, want 1", RootCertFile, len(roots))
	}
	issuers, err := ReadCerts(filepath.Join(dir, IssuingCertFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := ReadKey(filepath.Join(dir, IssuingKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	root, iss := roots[0], issuers[0]
	if !root.IsCA || !iss.IsCA {
		return nil, errors.New("load CA: root or issuing certificate is not a CA")
	}
	if err := iss.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("load CA: issuing CA is not signed by the root: %w", err)
	}
	if !key.PublicKey.Equal(iss.PublicKey) {
		return nil, fmt.Errorf("load CA: %s does not match %s", IssuingKeyFile, IssuingCertFile)
	}
	td, err := caTrustDomain(root)
	if err != nil {
		return nil, fmt.Errorf("load CA: root: %w", err)
	}
	if itd, err := caTrustDomain(iss); err != nil || itd != td {
		return nil, fmt.Errorf("load CA: issuing CA trust domain differs from the root's %q", td)
	}
	return &CA{TrustDomain: td, Root: root, Issuing: iss, issuingKey: key, dir: dir, now: time.Now, renewMu: new(sync.Mutex)}, nil
}

func caTrustDomain(c *x509.Certificate) (string, error) {
	if len(c.URIs) != 1 || c.URIs[0].Scheme != "spiffe" || c.URIs[0].Path != "" || !ValidTrustDomain(c.URIs[0].Host) ||
		c.URIs[0].String() != trustDomainURI(c.URIs[0].Host) {
		return "", errors.New("CA certificate does not carry one spiffe://<trust-domain> URI SAN")
	}
	return c.URIs[0].Host, nil
}

// ServerCertificate loads server.pem and server.key from the deployment
// directory. The returned chain is leaf, issuing, root: the root is sent too,
// so that an enrolling agent can check it against its pin.
func (c *CA) ServerCertificate() (tls.Certificate, error) {
	leaf, key, err := c.loadServer()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load server certificate: %w", err)
	}
	return c.serverChain(leaf, key), nil
}

// loadServer reads the server leaf (the first certificate of server.pem) and
// server.key, and checks that they match and that the issuing CA signed the
// leaf.
func (c *CA) loadServer() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs, err := ReadCerts(filepath.Join(c.dir, ServerCertFile))
	if err != nil {
		return nil, nil, err
	}
	key, err := ReadKey(filepath.Join(c.dir, ServerKeyFile))
	if err != nil {
		return nil, nil, err
	}
	leaf := certs[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", ServerKeyFile, ServerCertFile)
	}
	if err := leaf.CheckSignatureFrom(c.Issuing); err != nil {
		return nil, nil, fmt.Errorf("%s is not signed by the issuing CA: %w", ServerCertFile, err)
	}
	return leaf, key, nil
}

// serverChain is the certificate the server presents: leaf, issuing, root.
func (c *CA) serverChain(leaf *x509.Certificate, key *ecdsa.PrivateKey) tls.Certificate {
	chain := [][]byte{leaf.Raw, c.Issuing.Raw, c.Root.Raw}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

// Pin returns the pin of the root CA ("sha256:<hex>"), which enrolling
// agents are given.
func (c *CA) Pin() string { return SPKIPin(c.Root) }

// Pool returns a pool holding only the root CA certificate.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// SignAgentCSR issues an agent certificate for the public key of the DER CSR
// csrDER. The CSR must parse, be correctly self-signed and carry an ECDSA
// P-256 key, else the error wraps ErrBadCSR. Everything else in the CSR
// (subject, SANs, extensions) is ignored: the identity comes only from
// entity and agentID (invalid names wrap ErrInvalidName). ttl <= 0 means
// DefaultAgentTTL; ttl above MaxAgentTTL is an error; NotAfter never passes
// the issuing CA's. The returned chain is leaf, issuing (DER).
func (c *CA) SignAgentCSR(csrDER []byte, entity, agentID string, ttl time.Duration) (chain [][]byte, err error) {
	if ttl <= 0 {
		ttl = DefaultAgentTTL
	}
	if ttl > MaxAgentTTL {
		return nil, fmt.Errorf("sign agent CSR: TTL %s above the maximum %s", ttl, MaxAgentTTL)
	}
	now := c.now()
	return c.signAgent(csrDER, entity, agentID, now.Add(-ClockSkew), now.Add(ttl))
}

// signAgent is SignAgentCSR with an explicit validity period.
func (c *CA) signAgent(csrDER []byte, entity, agentID string, notBefore, notAfter time.Time) ([][]byte, error) {
	if !ValidName(entity) {
		return nil, fmt.Errorf("sign agent CSR: %w: entity %q", ErrInvalidName, entity)
	}
	if !ValidName(agentID) {
		return nil, fmt.Errorf("sign agent CSR: %w: agent id %q", ErrInvalidName, agentID)
	}
	pub, err := CheckCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("sign agent CSR: %w", err)
	}
	u, err := url.Parse(AgentURI(c.TrustDomain, entity, agentID))
	if err != nil {
		return nil, fmt.Errorf("sign agent CSR: %w", err)
	}
	// The certificate ends with the issuing CA at the latest: once that has
	// ended it would end before it began, and no peer would take it.
	if notAfter = minTime(notAfter, c.Issuing.NotAfter); !notAfter.After(notBefore) {
		return nil, fmt.Errorf("sign agent CSR: %w (it ended %s)", ErrIssuingCAExpiring, c.Issuing.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{entity}, CommonName: agentID},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	der, _, err := sign(tmpl, c.Issuing, pub, c.issuingKey)
	if err != nil {
		return nil, fmt.Errorf("sign agent CSR: %w", err)
	}
	return [][]byte{der, bytes.Clone(c.Issuing.Raw)}, nil
}

// CheckCSR parses a DER CSR, checks its self-signature and returns its
// public key, which must be ECDSA P-256. Every error wraps ErrBadCSR.
func CheckCSR(csrDER []byte) (*ecdsa.PublicKey, error) {
	if len(csrDER) == 0 || len(csrDER) > maxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCSR, len(csrDER))
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || csr.PublicKeyAlgorithm != x509.ECDSA {
		return nil, fmt.Errorf("%w: public key is %s (%T), want ECDSA P-256", ErrBadCSR, csr.PublicKeyAlgorithm, csr.PublicKey)
	}
	if pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key curve %s, want P-256", ErrBadCSR, pub.Curve.Params().Name)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return pub, nil
}
