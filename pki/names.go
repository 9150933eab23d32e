package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrInvalidName reports an entity, agent id or trust domain with a bad syntax.
var ErrInvalidName = errors.New("invalid name")

// ErrBadIdentity reports a certificate or URI that does not carry exactly one
// valid agent identity of the expected trust domain.
var ErrBadIdentity = errors.New("bad agent identity")

// maxNameLen is the longest entity or agent id.
const maxNameLen = 63

// ValidName reports whether s is a valid entity name or agent id:
// [a-z0-9][a-z0-9._-]{0,62}.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ValidTrustDomain reports whether s is a valid trust domain: a lowercase DNS
// name (labels of [a-z0-9-], not starting or ending with '-', joined by
// dots), at most 253 bytes, e.g. "vigil.example.org".
func ValidTrustDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// AgentURI returns the SPIFFE-style identity URI of an agent:
// spiffe://<trustDomain>/entity/<entity>/agent/<agentID>. It does not
// validate its arguments; see ValidName and ValidTrustDomain.
func AgentURI(trustDomain, entity, agentID string) string {
	return "spiffe://" + trustDomain + "/entity/" + entity + "/agent/" + agentID
}

// trustDomainURI is the URI SAN carried by the CA certificates.
func trustDomainURI(trustDomain string) string { return "spiffe://" + trustDomain }

// Identity is who an agent is, as its certificate says.
type Identity struct {
	TrustDomain string
	Entity      string
	AgentID     string
}

// String returns the identity's URI.
func (id Identity) String() string { return AgentURI(id.TrustDomain, id.Entity, id.AgentID) }

// IdentityFromCert returns the agent identity of cert. The certificate must
// carry exactly one URI SAN, and it must be exactly
// spiffe://<trustDomain>/entity/<entity>/agent/<agent-id> with valid names
// (no port, user info, query, fragment, escaping or extra path segments).
// IdentityFromCert does not verify the certificate's signature or validity
// period: the TLS handshake does that.
func IdentityFromCert(cert *x509.Certificate, trustDomain string) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("identity from certificate: %w: no certificate", ErrBadIdentity)
	}
	if n := len(cert.URIs); n != 1 {
		return Identity{}, fmt.Errorf("identity from certificate: %w: %d URI SANs, want exactly 1", ErrBadIdentity, n)
	}
	if cert.URIs[0] == nil {
		return Identity{}, fmt.Errorf("identity from certificate: %w: empty URI SAN", ErrBadIdentity)
	}
	id, err := ParseAgentURI(cert.URIs[0].String(), trustDomain)
	if err != nil {
		return Identity{}, fmt.Errorf("identity from certificate: %w", err)
	}
	return id, nil
}

// ParseAgentURI parses an agent identity URI (see AgentURI) of trustDomain.
// Only the canonical form is accepted: the URI must be byte for byte equal
// to AgentURI(trustDomain, entity, agentID) with valid names.
func ParseAgentURI(s, trustDomain string) (Identity, error) {
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("parse agent URI: %w: "+format, append([]any{ErrBadIdentity}, args...)...)
	}
	if !ValidTrustDomain(trustDomain) {
		return bad("invalid expected trust domain %q", trustDomain)
	}
	if len(s) > 512 {
		return bad("URI is %d bytes long", len(s))
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("%s", err.Error())
	}
	if u.Scheme != "spiffe" {
		return bad("scheme %q, want spiffe", u.Scheme)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" {
		return bad("URI has opaque part, user info, query, fragment or escapes")
	}
	if u.Host != trustDomain {
		return bad("trust domain %q, want %q", u.Host, trustDomain)
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "entity" || parts[3] != "agent" {
		return bad("path %q is not /entity/<entity>/agent/<agent-id>", u.Path)
	}
	entity, agentID := parts[2], parts[4]
	if !ValidName(entity) {
		return bad("invalid entity %q", entity)
	}
	if !ValidName(agentID) {
		return bad("invalid agent id %q", agentID)
	}
	if s != AgentURI(trustDomain, entity, agentID) {
		return bad("URI %q is not canonical", s)
	}
	return Identity{TrustDomain: trustDomain, Entity: entity, AgentID: agentID}, nil
}
