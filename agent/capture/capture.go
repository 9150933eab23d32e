// Package capture provides the agent's packet sources: pcap and pcapng
// files and live AF_PACKET capture (TPACKET_V3, optional fanout, BPF
// filters), all in pure Go on gopacket without libpcap. Frames are decoded
// with preallocated gopacket layers into event.Packet records (metadata
// only, no payload) and handed out in batches; the common untagged
// Ethernet + IPv4 + TCP/UDP frame takes a hand-written path that gives the
// same record (fastEthIPv4), and classic pcap files are read without a
// per-packet copy (pcapReader; pcapgo reads pcapng).
//
// Sources never panic on outside input: a panic inside the decoder is
// recovered and counted, truncated or corrupt files end with an error that
// names the file and the record after all packets before it were delivered,
// and frames of unsupported link types are skipped and counted (live
// capture refuses an interface whose frames it cannot decode when it opens:
// Ethernet-like and raw-IP interfaces are captured, see linkTypeOf).
//
// This package is part of the agent core: it imports no model or plugin
// code besides the record layout in plugins/sdk/event.
package capture

import (
	"context"
	"errors"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Source is a stream of decoded packets.
type Source interface {
	// Next fills buf with up to len(buf) packets and returns how many. It
	// returns n > 0 with a nil error, or 0 with an error: io.EOF at the end of
	// a file, the context's error when ctx ends, or a read error (after every
	// packet before it was delivered by earlier calls).
	Next(ctx context.Context, buf []event.Packet) (n int, err error)
	// Stats returns the counters so far. Safe to call concurrently with Next.
	Stats() Stats
	// Close releases the source.
	Close() error
}

// Stats counts what a source saw.
type Stats struct {
	Packets         uint64 // frames read from the file or the kernel
	Bytes           uint64 // their captured bytes
	Decoded         uint64 // frames delivered as records (including truncated ones)
	DecodeErrors    uint64 // frames whose link layer did not decode (incl. recovered panics); not delivered
	Truncated       uint64 // frames delivered with FlagTrunc (a truncated or malformed inner layer)
	UnknownLinkType uint64 // frames of an unsupported link type; not delivered
	KernelDrops     uint64 // frames the kernel dropped (live capture: ring full)
	OurDrops        uint64 // frames read and decoded but discarded (live capture closed before delivery)
	// CookiesUntracked counts session cookies that the cookie-reuse hint
	// did not follow because its table was full (cookiehint.go).
	CookiesUntracked uint64
}

func (s *Stats) add(o Stats) {
	s.Packets += o.Packets
	s.Bytes += o.Bytes
	s.Decoded += o.Decoded
	s.DecodeErrors += o.DecodeErrors
	s.Truncated += o.Truncated
	s.UnknownLinkType += o.UnknownLinkType
	s.KernelDrops += o.KernelDrops
	s.OurDrops += o.OurDrops
	s.CookiesUntracked += o.CookiesUntracked
}

// Errors that callers may test with errors.Is.
var (
	// ErrUnknownFormat: the file is neither pcap nor pcapng.
	ErrUnknownFormat = errors.New("not a pcap or pcapng file")
	// ErrUnsupportedLinkType: the file holds only frames of link types that
	// the decoder does not handle.
	ErrUnsupportedLinkType = errors.New("unsupported link type")
	// ErrTruncated: the file ends inside a record.
	ErrTruncated = errors.New("truncated capture file")
	// ErrCorrupt: a record header is invalid.
	ErrCorrupt = errors.New("corrupt capture file")
)
