// Package sdk is the contract between the Vigil agent and its detector
// plugins, and everything a detector author needs: implement Detector (and,
// optionally, FileScorer), then call Serve from main.
//
// A plugin is a separate, unprivileged process started by the agent with
// hashicorp/go-plugin in gRPC mode (one Handshake, plugin name "detector").
// Control and results travel over the gRPC service in proto/ (Info,
// LoadModel, Score, Health, Consume); packet events travel through the
// shared-memory ring of package ring, which the SDK reads in batches and hands
// to Detector.ScorePackets. File layout follows Nomad's plugins: detector.go
// (the interface), plugin.go (go-plugin glue), server.go and client.go (gRPC
// adapters), serve.go (Serve), sdktest (the conformance harness).
//
// This package imports neither agent/ nor server/; the agent side of the
// contract (launching, supervising, the ring producer) is agent/pluginhost.
package sdk

import (
	"context"
	"net/netip"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Detector is what a detector plugin implements.
//
// Concurrency: the SDK never calls ScorePackets (or FileScorer.ScoreFiles)
// concurrently with itself, and never calls LoadModel concurrently with
// itself, but LoadModel and Health may run while a batch is being scored, so
// a detector swaps its model atomically (e.g. atomic.Pointer). LoadModel must
// leave the previous model active when it fails.
type Detector interface {
	// Info describes the detector; it must not depend on the loaded model.
	Info() Info
	// LoadModel loads the model bundle at path and makes it active.
	LoadModel(ctx context.Context, bundlePath string) (ModelInfo, error)
	// ScorePackets scores one batch. pkts is only valid during the call (the
	// SDK reuses it). Anomaly.Index is the position in pkts.
	ScorePackets(ctx context.Context, pkts []event.Packet) (Result, error)
	// Health reports the detector's state; it must be cheap.
	Health(ctx context.Context) Health
}

// FileScorer is implemented by detectors of file events (event.File, sent
// in batches over unary Score calls, not the ring). files is only valid
// during the call; Anomaly.Index is the position in files.
type FileScorer interface {
	ScoreFiles(ctx context.Context, files []event.File) (Result, error)
}

// EventKind is the kind of events a detector consumes.
type EventKind int

// Event kinds.
const (
	EventUnspecified EventKind = iota
	EventPacket
	EventFile
)

func (k EventKind) String() string {
	switch k {
	case EventPacket:
		return "packet"
	case EventFile:
		return "file"
	default:
		return "unspecified"
	}
}

// Info describes a detector.
type Info struct {
	Name        string    // e.g. "netflow"
	Version     string    // the plugin's version
	EventKind   EventKind // EventPacket or EventFile
	FeatureSets []string  // accepted feature sets, e.g. ["netflow/v1"]
	Dim         int       // feature dimension
}

// ModelInfo identifies the active model.
type ModelInfo struct {
	Name       string
	Version    uint64 // the bundle's monotonic version
	Digest     string // "sha256:<hex>" of the model file
	FeatureSet string
	Threshold  float32
}

// Contribution is one feature's share of an anomaly score.
type Contribution struct {
	Name         string
	Contribution float32
}

// Well-known Anomaly.Context keys.
const (
	ContextSrcIP   = "src_ip"
	ContextDstIP   = "dst_ip"
	ContextSrcPort = "src_port"
	ContextDstPort = "dst_port"
	ContextProto   = "proto"
	ContextPath    = "path"
)

// Anomaly is one record whose score reached the threshold.
type Anomaly struct {
	// Index is the record's position in the batch given to the detector; in
	// a RingResult (agent side) it is the record's absolute ring sequence.
	Index       uint64
	Score       float32
	Threshold   float32
	TopFeatures []Contribution
	Context     map[string]string
	// Aggregate, when set, makes this anomaly stand for several anomalous
	// records of one source that the detector merged (packet detectors
	// during a scan: one anomaly per source and batch instead of one per
	// packet). Index, Context and the time of the first record then
	// describe the first merged record; Score, Threshold, TopFeatures and
	// the Context's model keys the record with the largest score/threshold
	// ratio (the first of equals). nil: one record.
	Aggregate *Aggregate
}

// MaxAggregateAddrs bounds Aggregate.DstAddrs.
const MaxAggregateAddrs = 4096

// Aggregate summarises the anomalous records merged into one Anomaly.
type Aggregate struct {
	Count           uint64 // records merged (0 counts as 1)
	FirstNs, LastNs int64  // event time of the first and last record, Unix ns
	Bytes           uint64 // sum of the records' lengths
	// Records by kind: TCP SYN without ACK, UDP, ICMP and ICMPv6, ARP.
	TCPSyn, UDP, ICMP, ARP uint64
	// DstPorts are the distinct destination ports of the TCP and UDP
	// records, DstAddrs the distinct destination addresses (at most
	// MaxAggregateAddrs; DstAddrsTruncated says more were left out), in any
	// order.
	DstPorts          []uint16
	DstAddrs          []netip.Addr
	DstAddrsTruncated bool
	// The lead-in: the source's records in the seconds before FirstNs that
	// were not merged (not anomalous), where the detector knows them. The
	// netflow plugin sets it on the anomaly that opens a source's window
	// (plugins/netflow, Options.LeadIn); the agent gives it to the finding
	// (wire Finding.lead_in_unix_nano). LeadFirstNs is the first such
	// record's time (0: no lead-in), LeadCount and LeadBytes their number
	// and lengths. The records are not in Count or Bytes.
	LeadFirstNs          int64
	LeadCount, LeadBytes uint64
}

// MaxLeadIn bounds an Aggregate's lead-in: a LeadFirstNs more than this
// before FirstNs (or after it) is not one the agent accepts.
const MaxLeadIn = 5 * time.Minute

// ValidLead reports whether g's lead-in is consistent: none at all (every
// field 0), or a first time within MaxLeadIn before FirstNs with at least
// one record.
func (g *Aggregate) ValidLead() bool {
	if g.LeadFirstNs == 0 {
		return g.LeadCount == 0 && g.LeadBytes == 0
	}
	return g.LeadCount > 0 && g.LeadFirstNs <= g.FirstNs && g.FirstNs-g.LeadFirstNs <= int64(MaxLeadIn)
}

// Records returns the number of records a stands for (1 without Aggregate).
func (a *Anomaly) Records() uint64 {
	if a.Aggregate != nil && a.Aggregate.Count > 1 {
		return a.Aggregate.Count
	}
	return 1
}

// CountRecords returns the number of anomalous records as stand for.
func CountRecords(as []Anomaly) uint64 {
	var n uint64
	for i := range as {
		n += as[i].Records()
	}
	return n
}

// Stats are per-batch statistics for calibration, shadow mode and drift.
type Stats struct {
	Count     uint64
	Anomalies uint64
	P50, P90  float32
	P99, Max  float32
}

// Result is a detector's answer for one batch.
type Result struct {
	Anomalies []Anomaly
	// Scores, when set, holds one score per record; the SDK derives Stats
	// from it (count, quantiles, max). Leave it nil to fill Stats yourself.
	Scores []float32
	Stats  Stats
}

// Health is a detector's self-report.
type Health struct {
	OK          bool
	Message     string
	Model       ModelInfo
	MemoryBytes uint64
	Stats       map[string]uint64
}

// RawBatch is a batch of packed records: fixed-size packet records
// (RecordSize 64, event.PacketLayoutVersion) or one event.MarshalFiles batch
// (RecordSize 0, event.FileLayoutVersion).
type RawBatch struct {
	LayoutVersion uint32
	RecordSize    int
	Data          []byte
}

// Len returns the number of whole records in b.
func (b RawBatch) Len() int {
	if b.RecordSize <= 0 {
		return 0
	}
	return len(b.Data) / b.RecordSize
}

// BatchResult is what the agent receives for one batch consumed from the
// ring: records [Start, End) were scored; Anomaly.Index is absolute.
type BatchResult struct {
	Start, End uint64
	Stats      Stats
	Anomalies  []Anomaly
	Err        string // set when the detector failed on this batch
}
