package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// ErrPinMismatch reports a server whose presented chain has no CA certificate
// matching the pin.
var ErrPinMismatch = errors.New("no CA certificate in the server's chain matches the pin")

// ServerTLSConfig is the server's TLS configuration: TLS 1.3 only, ALPN
// wirev1.ALPN, serverCert as the certificate, and client certificates
// verified against clientRoots if given (ENROLL connections have none). A nil
// clientRoots trusts no client certificate (never the system roots). The
// caller maps a verified client certificate to an Identity with
// IdentityFromCert and refuses revoked agents (e.g. in VerifyConnection).
// A server that renews its certificate while running uses
// ServerTLSConfigFrom.
func ServerTLSConfig(serverCert tls.Certificate, clientRoots *x509.CertPool) *tls.Config {
	c := serverTLSConfig(clientRoots)
	c.Certificates = []tls.Certificate{serverCert}
	return c
}

// ServerTLSConfigFrom is ServerTLSConfig with the certificate taken from
// certs at each handshake (GetCertificate; Certificates is empty, so that
// handshakes without SNI use it too): a certificate swapped in with
// certs.Set is presented from the next handshake on.
func ServerTLSConfigFrom(certs *CertHolder, clientRoots *x509.CertPool) *tls.Config {
	c := serverTLSConfig(clientRoots)
	c.GetCertificate = certs.Get
	return c
}

func serverTLSConfig(clientRoots *x509.CertPool) *tls.Config {
	if clientRoots == nil {
		clientRoots = x509.NewCertPool()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{wirev1.ALPN},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  clientRoots,
	}
}

// AgentTLSConfig is the agent's TLS configuration for a server whose
// certificate verifies against roots for serverName (a DNS name or an IP
// address). clientCert is the agent's certificate (chain leaf, issuing), nil
// when enrolling. A nil roots trusts nothing (never the system roots).
func AgentTLSConfig(clientCert *tls.Certificate, roots *x509.CertPool, serverName string) *tls.Config {
	if roots == nil {
		roots = x509.NewCertPool()
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{wirev1.ALPN},
		RootCAs:    roots,
		ServerName: serverName,
	}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	return cfg
}

// PinnedTLSConfig is the agent's TLS configuration for enrollment, before it
// has the CA certificate: it accepts the server only if the chain the server
// presents holds a CA certificate whose SubjectPublicKeyInfo hash equals pin
// ("sha256:<hex>") and the server's leaf verifies up to that certificate (as
// the only root, with the other presented certificates as intermediates) for
// serverName and server authentication. An invalid pin makes every handshake
// fail; check it first with ParsePin.
func PinnedTLSConfig(pin, serverName string) *tls.Config {
	want, pinErr := ParsePin(pin)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{wirev1.ALPN},
		ServerName: serverName,
		// The standard verification is replaced by VerifyConnection below,
		// which runs on every handshake (resumed ones too).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if pinErr != nil {
				return pinErr
			}
			_, err := VerifyPinnedChain(cs.PeerCertificates, want, serverName)
			return err
		},
	}
}

// VerifyPinnedChain verifies a server's presented chain (leaf first) against
// the pin digest want (see ParsePin) and serverName, as PinnedTLSConfig does,
// and returns the pinned CA certificate.
func VerifyPinnedChain(chain []*x509.Certificate, want []byte, serverName string) (*x509.Certificate, error) {
	if len(want) != sha256.Size {
		return nil, fmt.Errorf("verify pinned chain: %w: digest of %d bytes", ErrBadPin, len(want))
	}
	if serverName == "" {
		return nil, errors.New("verify pinned chain: no server name to check")
	}
	if len(chain) == 0 {
		return nil, errors.New("verify pinned chain: server presented no certificate")
	}
	var anchor *x509.Certificate
	for _, c := range chain[1:] {
		if !c.IsCA || !c.BasicConstraintsValid {
			continue
		}
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		if subtle.ConstantTimeCompare(sum[:], want) == 1 {
			anchor = c
			break
		}
	}
	if anchor == nil {
		return nil, fmt.Errorf("verify pinned chain: %w", ErrPinMismatch)
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != anchor {
			inter.AddCert(c)
		}
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("verify pinned chain: %w", err)
	}
	return anchor, nil
}
