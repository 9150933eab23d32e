// Package endpoint is the Vigil server's QUIC endpoint: it accepts agent
// connections (ALPN vigil/1, TLS 1.3, mutual TLS), refuses revoked agents at
// the handshake and serves the four stream kinds of wire/v1:
//
//   - ENROLL: token + CSR -> certificate chain (the only stream allowed on a
//     connection without a client certificate);
//   - CONTROL: Hello -> HelloAck (with the highest seq stored for the agent,
//     once its batches still committing are done: seq.go), Status heartbeats, certificate renewal, and
//     server pushes (ModelOffer, SlowDown) through Endpoint.Push; right after
//     HelloAck, and again on every change (Endpoint.SuppressionsChanged), the
//     entity's active suppressions (suppressions.go);
//   - FINDINGS: FindingsBatch -> commit -> Ack;
//   - FETCH: model bundles by digest, resumable from an offset.
//
// Identity. Who an agent is (agent id, entity) comes only from its verified
// client certificate (pki.IdentityFromCert). No message carries an identity
// the server would trust: a Finding has no agent or entity field, and the
// endpoint stores every finding under the identity of the certificate of the
// connection that carried it.
//
// Misbehaving peers. An oversized frame, a malformed message, an unknown stream
// kind or a broken sequence closes that one connection with the matching
// wirev1.ErrorCode; the endpoint keeps serving everyone else. Every connection
// and stream goroutine recovers from panics as a last line of defence.
//
// Revocation. A revoked agent is refused inside the TLS handshake with the TLS
// alert certificate_revoked (QUIC CRYPTO_ERROR 0x100+44 = 0x12c), so it never
// gets to open a stream; an agent revoked while connected is disconnected with
// wirev1.CodeRevoked.
//
// Stream handlers take an io.Reader/io.Writer and the peer identity, so they
// are tested and fuzzed without QUIC.
package endpoint
