// Package pki is Vigil's public-key infrastructure: the deployment's root and
// issuing certificate authorities, the server certificate, agent certificates
// with SPIFFE-style identities, CA pins for enrollment, key and certificate
// files, and the TLS configurations of both sides.
//
// Everything uses ECDSA P-256 and X.509; TLS is 1.3 only with ALPN
// wirev1.ALPN.
//
// A deployment directory (written by Init, read by LoadCA) holds:
//
//	ca.pem       root CA certificate: what agents trust, and what the pin names
//	root.key     root CA key (0600); only Init uses it, keep it offline after
//	issuing.pem  issuing CA certificate (signed by the root, MaxPathLen 0)
//	issuing.key  issuing CA key (0600); signs agent certificates
//	server.pem   server certificate chain: leaf, issuing
//	server.key   server key (0600)
//
// The server certificate (ServerTTL, one year) is renewed by the server
// itself: RenewServerCertificate re-issues it from the issuing CA, same
// names and key, once it is within ServerRenewBefore of its end, and the
// server presents the new one through a CertHolder (ServerTLSConfigFrom)
// without a restart. Agents, which trust the root, accept it unchanged. The
// CAs are not renewed by the server: once the issuing CA is within that
// window of its own end, renewal fails with ErrIssuingCAExpiring and the
// operator rotates it (RotateIssuing, `vigil-server ca rotate-issuing`,
// which needs the root key): a new issuing CA under the same root, and the
// server certificate re-issued by it. Agents need nothing: their
// certificates from the old issuing CA stay valid, and their next renewal
// comes from the new one. The root (RootTTL) is not rotated: a deployment
// whose root nears its end is set up again and its agents enrolled again.
//
// An agent's identity is the single URI SAN of its certificate,
// spiffe://<trust-domain>/entity/<entity>/agent/<agent-id>; the server derives
// who an agent is from that certificate only (IdentityFromCert).
//
// Private key files must not be readable by group or others: ReadKey refuses
// a key file whose mode has any of the bits 0077 set, and WriteKey always
// writes mode 0600 atomically (temporary file, fsync, rename).
package pki
