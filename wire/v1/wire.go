// Package wirev1 is the agent <-> server protocol of Vigil, version 1: the
// protobuf messages (generated from vigil.proto), the framing of those
// messages on QUIC streams, and the application error codes. It belongs to
// neither side: both agent/ and server/ import it, and it imports neither.
package wirev1

//go:generate protoc --go_out=. --go_opt=paths=source_relative vigil.proto

// ProtocolVersion is the version of this protocol that this code speaks.
//
// History:
//   - 1: first version: ENROLL, CONTROL (Hello, Status, Renew, ModelOffer,
//     SlowDown), FINDINGS (FindingsBatch -> Ack), FETCH.
//   - 1 (additive, no version change): ServerControl.suppressions (field 6):
//     the entity's active false-positive suppressions, sent after HelloAck
//     and on every change. Older agents ignore the unknown oneof case.
//   - 1 (additive, no version change): ModelOffer.rollback_instruction (field
//     6), the signed rollback instruction of a rollback offer (older agents
//     refuse rollback offers, as before); ServerControl.model_withdrawal
//     (field 7): a halted rollout's bundle is withdrawn and a shadow model
//     running it stops (older agents ignore the unknown oneof case).
//   - 1 (no version change): the server's limits of a FindingsBatch are
//     written here (limits.go), and both sides' readers refuse a frame whose
//     repeated fields hold more elements than those limits (other fields:
//     MaxRepeated) before decoding it. No frame that a peer of this version
//     sends, or that the server accepted before, is above them.
//   - 1 (additive, no version change): Finding.lead_in_unix_nano,
//     lead_in_packets and lead_in_bytes (fields 16-18), the source's packets
//     just before first_seen. An older server ignores them; the server
//     refuses a lead-in after first_seen or more than MaxLeadIn before it.
//   - 1 (additive, no version change): CodeRefused (0x14). A CONTROL or
//     FETCH frame or message that the server refuses (malformed, above the
//     limits) closes the connection with it instead of CodeProtocol or
//     CodeFrameTooLarge, which now name a refused FINDINGS (or ENROLL)
//     stream only. An agent counts those against the findings in flight
//     when it isolates a finding the server refuses; a refused control
//     message is not their doing. An older agent takes 0x14 for an unknown
//     code: a session error, retried with backoff, no strike.
//   - 1 (additive, no version change): HelloAck.highest_seq (field 5,
//     proto3 optional), the highest Finding.seq the server holds for the
//     agent. An agent whose spool was lost or recreated (seqs from 1
//     again, identity.json kept) renumbers its pending findings above it
//     before it sends, instead of having them taken for duplicates. An
//     older agent ignores the field; an older server does not set it, and
//     the agent then leaves its seqs as they are (as before).
const ProtocolVersion = 1

// ALPN is the TLS application protocol negotiated on every connection.
const ALPN = "vigil/1"

// MaxFrameSize bounds every framed message on the wire (bytes, excluding the
// varint length prefix). A larger frame closes the connection with
// CodeFrameTooLarge.
const MaxFrameSize = 4 << 20

// MaxFetchChunk bounds the data in one FetchChunk.
const MaxFetchChunk = 256 << 10

// ErrorCode is a QUIC application error code (connection or stream) and the
// code carried in an Error message.
type ErrorCode uint64

// Application error codes. They are stable: agents and servers of different
// builds compare them.
const (
	CodeNoError        ErrorCode = 0x0
	CodeProtocol       ErrorCode = 0x10 // malformed frame or message
	CodeFrameTooLarge  ErrorCode = 0x11 // frame above MaxFrameSize
	CodeUnknownKind    ErrorCode = 0x12 // StreamHeader names no known kind
	CodeBadVersion     ErrorCode = 0x13 // unsupported protocol version
	CodeRefused        ErrorCode = 0x14 // a CONTROL or FETCH message malformed or above the limits
	CodeUnauthorized   ErrorCode = 0x20 // no or unknown client identity
	CodeRevoked        ErrorCode = 0x21 // the agent's certificate is revoked
	CodeTokenInvalid   ErrorCode = 0x22 // enrollment token unknown, used, expired
	CodeBadCSR         ErrorCode = 0x23 // CSR malformed or with a bad key
	CodeNotFound       ErrorCode = 0x30 // FETCH of an unknown digest
	CodeOverloaded     ErrorCode = 0x40 // server asks the agent to back off
	CodeInternal       ErrorCode = 0x50 // server-side failure; the agent retries
	CodeShuttingDown   ErrorCode = 0x51 // server stops; the agent reconnects later
	CodeSequenceBroken ErrorCode = 0x60 // FindingsBatch seqs not increasing
)

// String names the code for logs.
func (c ErrorCode) String() string {
	switch c {
	case CodeNoError:
		return "no_error"
	case CodeProtocol:
		return "protocol_error"
	case CodeFrameTooLarge:
		return "frame_too_large"
	case CodeUnknownKind:
		return "unknown_stream_kind"
	case CodeBadVersion:
		return "bad_version"
	case CodeRefused:
		return "refused"
	case CodeUnauthorized:
		return "unauthorized"
	case CodeRevoked:
		return "revoked"
	case CodeTokenInvalid:
		return "token_invalid"
	case CodeBadCSR:
		return "bad_csr"
	case CodeNotFound:
		return "not_found"
	case CodeOverloaded:
		return "overloaded"
	case CodeInternal:
		return "internal"
	case CodeShuttingDown:
		return "shutting_down"
	case CodeSequenceBroken:
		return "sequence_broken"
	default:
		return "unknown"
	}
}

// TLSAlertCertificateRevoked is the QUIC transport error code (CRYPTO_ERROR
// 0x100 + TLS alert 44, certificate_revoked) with which the server refuses a
// revoked agent inside the handshake, before any stream exists.
const TLSAlertCertificateRevoked = 0x100 + 44
