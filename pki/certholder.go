package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"time"
)

// CertHolder holds the server's current certificate for TLS handshakes: its
// Get is a tls.Config.GetCertificate, so that a renewed certificate put in
// with Set is presented from the next handshake on, without a restart. The
// zero value holds nothing (Get fails). It is safe for concurrent use.
type CertHolder struct {
	cert atomic.Pointer[tls.Certificate]
}

// NewCertHolder returns a holder of cert.
func NewCertHolder(cert tls.Certificate) *CertHolder {
	h := &CertHolder{}
	h.Set(cert)
	return h
}

// Set makes cert the certificate of the following handshakes.
func (h *CertHolder) Set(cert tls.Certificate) {
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			cert.Leaf = leaf
		}
	}
	h.cert.Store(&cert)
}

// Current returns the certificate held, nil if none. The caller must not
// modify it.
func (h *CertHolder) Current() *tls.Certificate { return h.cert.Load() }

// Get returns the certificate held; it is a tls.Config.GetCertificate.
func (h *CertHolder) Get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := h.cert.Load()
	if c == nil {
		return nil, errors.New("no server certificate")
	}
	return c, nil
}

// NotAfter is the end of the held certificate's validity; zero if none.
func (h *CertHolder) NotAfter() time.Time {
	c := h.cert.Load()
	if c == nil || c.Leaf == nil {
		return time.Time{}
	}
	return c.Leaf.NotAfter
}
