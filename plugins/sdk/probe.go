package sdk

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// The probe batches: before a model goes live, the server's publish smoke
// test (server/registry) and the agent's updater (agent/update) have the real
// plugin load the bundle and score one of these, and refuse the model when the
// call fails or a score is not finite. Both sides use these two functions, so
// that what the server accepts is what the agents check.

// ProbeStart is the time of the probes' first event (1 January 2020, UTC):
// earlier than any live event, so a probe's state in a running plugin is the
// first evicted and never decays live state.
var ProbeStart = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// ProbePackets is the probe batch of packet detectors: 64 packets of a short
// TCP exchange between two documentation addresses (RFC 5737), so that the
// flow state they create in the plugin never mixes with real traffic.
func ProbePackets() []event.Packet {
	base := ProbeStart.UnixNano()
	src := [16]byte{10: 0xff, 11: 0xff, 12: 192, 13: 0, 14: 2, 15: 1}
	dst := [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 51, 14: 100, 15: 1}
	out := make([]event.Packet, 64)
	for i := range out {
		p := event.Packet{TimestampNs: base + int64(i)*1_000_000, SrcIP: src, DstIP: dst, SrcPort: 40000, DstPort: 443,
			Length: uint16(60 + 20*(i%7)), Proto: 6, TCPFlags: 0x18, TTL: 64}
		if i%2 == 1 {
			p.SrcIP, p.DstIP, p.SrcPort, p.DstPort = dst, src, 443, 40000
		}
		if i == 0 {
			p.TCPFlags = 0x02
		}
		out[i] = p
	}
	return out
}

// ProbeRoot is the watch root of ProbeFiles' events: a tree of its own in
// the plugin's per-tree state, which no sensor watches.
const ProbeRoot = "/nonexistent/vigil-probe"

// ProbeFiles is the probe batch of file detectors: 16 sampled text files
// created under ProbeRoot, one a millisecond. Each is a valid file-event
// record (event.File.AppendRecord accepts it).
func ProbeFiles() []event.File {
	base := ProbeStart.UnixNano()
	out := make([]event.File, 16)
	for i := range out {
		size := int64(1000 * (i + 1))
		out[i] = event.File{TimeNs: base + int64(i)*1_000_000, Op: event.FileCreate, Size: size, Mode: 0o644, Writes: 1,
			Flags: event.FileFlagSampled, SampleLen: uint32(size), Magic: event.MagicText, ExtMagic: event.MagicText,
			Entropy: 4.5, PrintableFrac: 1, ChiSquare: 20000,
			Root: ProbeRoot, Path: fmt.Sprintf("%s/notes-%02d.txt", ProbeRoot, i)}
	}
	return out
}

var (
	probeFiles   = sync.OnceValue(ProbeFiles)
	probePackets = sync.OnceValue(ProbePackets)
)

// IsProbeFiles reports whether files is the probe batch of ProbeFiles,
// record for record. A detector scores it like any batch (that is the
// check), but learns nothing from it that outlives the call: per-sensor
// calibration (selfcal) neither starts nor samples on it. Its events are
// dated 2020, and they would otherwise open a new model's grace period, which
// the next live event would then close at once.
func IsProbeFiles(files []event.File) bool {
	return slices.Equal(files, probeFiles())
}

// IsProbePackets is IsProbeFiles for ProbePackets.
func IsProbePackets(pkts []event.Packet) bool {
	return slices.Equal(pkts, probePackets())
}
