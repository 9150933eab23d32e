package sdk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

// Client is the host side of the Detector service, returned by dispensing
// PluginName from a go-plugin client.
type Client struct {
	rpc pb.DetectorClient
}

// NewClient wraps a raw gRPC client (tests, benchmarks).
func NewClient(rpc pb.DetectorClient) *Client { return &Client{rpc: rpc} }

// PluginInfo is Info as seen by the host, with the plugin's layout versions.
type PluginInfo struct {
	Info
	RingLayoutVersion   uint32
	RecordLayoutVersion uint32
}

// maxControlBytes bounds the answers of Info, LoadModel and Health (the
// agent's go-plugin connection accepts up to 2 GiB from a plugin).
const maxControlBytes = 1 << 20

// maxErrorText bounds the text of a plugin's error that the agent keeps
// (a gRPC status message, which the connection accepts up to 16 MiB, or a
// batch result's error): it goes into the agent's log and into model
// status reports, which must fit the wire's frames.
const maxErrorText = 4 << 10

// callErr is err, the error of a call to the plugin, prefixed with what,
// its gRPC status message cut to maxErrorText (its code kept).
func callErr(what string, err error) error {
	if st, ok := status.FromError(err); ok && len(st.Message()) > maxErrorText {
		err = status.Error(st.Code(), cutText(st.Message(), maxErrorText))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// cutText returns s cut to at most n bytes at a rune boundary, marked.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(s[i]); j++ {
		i--
	}
	return s[:i] + fmt.Sprintf(" [%d bytes cut]", len(s)-i)
}

// Info asks the plugin to describe itself.
func (c *Client) Info(ctx context.Context) (PluginInfo, error) {
	r, err := c.rpc.Info(ctx, &pb.InfoRequest{}, grpc.MaxCallRecvMsgSize(maxControlBytes))
	if err != nil {
		return PluginInfo{}, callErr("plugin info", err)
	}
	return PluginInfo{
		Info: Info{
			Name: r.GetName(), Version: r.GetVersion(), EventKind: kindFromProto(r.GetEventKind()),
			FeatureSets: r.GetFeatureSets(), Dim: int(r.GetDim()),
		},
		RingLayoutVersion:   r.GetRingLayoutVersion(),
		RecordLayoutVersion: r.GetRecordLayoutVersion(),
	}, nil
}

// LoadModel asks the plugin to load a bundle; on error its old model stays.
func (c *Client) LoadModel(ctx context.Context, bundlePath string) (ModelInfo, error) {
	r, err := c.rpc.LoadModel(ctx, &pb.LoadModelRequest{BundlePath: bundlePath}, grpc.MaxCallRecvMsgSize(maxControlBytes))
	if err != nil {
		return ModelInfo{}, callErr("plugin load model", err)
	}
	m := modelFromProto(r.GetModel())
	for _, f := range []struct{ name, v string }{{"name", m.Name}, {"digest", m.Digest}, {"feature set", m.FeatureSet}} {
		if len(f.v) > MaxModelText {
			return ModelInfo{}, fmt.Errorf("plugin load model: the answer's model %s has %d bytes (at most %d)", f.name, len(f.v), MaxModelText)
		}
	}
	return m, nil
}

// MaxModelText bounds the name, digest and feature set of the model a
// plugin says it loaded: the agent reports them to the server in every
// Hello and Status, whose model references the wire protocol bounds to
// 128 bytes (wire/v1 MaxShortStringLen; the server refuses a Hello beyond
// it). A bundle's are shorter (models/bundle: names of at most 63 bytes,
// "sha256:" and 64 hex digits).
const MaxModelText = 128

// Health asks the plugin for its health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	r, err := c.rpc.Health(ctx, &pb.HealthRequest{}, grpc.MaxCallRecvMsgSize(maxControlBytes))
	if err != nil {
		return Health{}, callErr("plugin health", err)
	}
	return healthFromProto(r), nil
}

// ScorePackets scores a batch with one unary call (packed 64-byte records).
// Anomaly.Index is the position in pkts.
func (c *Client) ScorePackets(ctx context.Context, pkts []event.Packet) (Result, error) {
	buf := make([]byte, len(pkts)*event.PacketRecordSize)
	for i := range pkts {
		pkts[i].Marshal(buf[i*event.PacketRecordSize:])
	}
	return c.ScoreRaw(ctx, EventPacket, RawBatch{LayoutVersion: event.PacketLayoutVersion, RecordSize: event.PacketRecordSize, Data: buf})
}

// ScoreFiles scores file events with one unary call (event.MarshalFiles
// encoding). Anomaly.Index is the position in files.
func (c *Client) ScoreFiles(ctx context.Context, files []event.File) (Result, error) {
	buf, err := event.MarshalFiles(nil, files)
	if err != nil {
		return Result{}, fmt.Errorf("plugin score files: %w", err)
	}
	return c.ScoreRaw(ctx, EventFile, RawBatch{LayoutVersion: event.FileLayoutVersion, Data: buf})
}

// ScoreRaw scores a batch of already packed records of the given kind. The
// answer is decoded within the bounds of the batch's records (as a
// RingResult is): a file batch's answer may repeat its paths escaped
// (event.SafePath, up to 4 bytes per byte).
func (c *Client) ScoreRaw(ctx context.Context, kind EventKind, b RawBatch) (Result, error) {
	records := b.Len()
	if b.RecordSize == 0 && len(b.Data) >= 8 {
		records = int(binary.LittleEndian.Uint32(b.Data[4:])) // event.MarshalFiles: the count follows the magic
	}
	codec := newRingCodecFor(max(records, 1))
	limit := maxRingResultBytes(codec.maxRecords) + 4*len(b.Data)
	r, err := c.rpc.Score(ctx, &pb.ScoreRequest{
		Kind: kindToProto(kind), LayoutVersion: b.LayoutVersion, RecordSize: uint32(max(b.RecordSize, 0)), Records: b.Data,
	}, grpc.ForceCodecV2(codec), grpc.MaxCallRecvMsgSize(limit))
	if err != nil {
		return Result{}, callErr("plugin score", err)
	}
	return Result{Stats: statsFromProto(r.GetStats()), Anomalies: anomaliesFromProto(r.GetAnomalies())}, nil
}

// ConsumeConfig tells the plugin where its ring is and how to batch.
type ConsumeConfig struct {
	RingFD, WakeFD int // in the plugin: 3+i for ExtraFiles[i]
	MaxBatch       int
	MaxDelay       time.Duration
}

// ResultStream receives the results of a Consume call.
type ResultStream struct {
	s pb.Detector_ConsumeClient
}

// Consume attaches the plugin to its ring. It waits for the plugin's attach
// acknowledgement and returns the ring's tail at attach time. The results
// are decoded within the bounds of batches of cfg.MaxBatch records (a
// result that exceeds them ends the stream with an error).
func (c *Client) Consume(ctx context.Context, cfg ConsumeConfig) (*ResultStream, uint64, error) {
	maxRecords := cfg.MaxBatch
	if maxRecords == 0 {
		maxRecords = DefaultMaxBatch // the plugin's default, as for MaxBatch 0 below
	}
	codec := newRingCodecFor(maxRecords)
	s, err := c.rpc.Consume(ctx, &pb.ConsumeRequest{
		RingFd: uint32(max(cfg.RingFD, 0)), WakeFd: uint32(max(cfg.WakeFD, 0)),
		MaxBatch: uint32(max(cfg.MaxBatch, 0)), MaxDelayUs: uint32(max(cfg.MaxDelay.Microseconds(), 0)),
	}, grpc.ForceCodecV2(codec), grpc.MaxCallRecvMsgSize(maxRingResultBytes(codec.maxRecords)))
	if err != nil {
		return nil, 0, callErr("plugin consume", err)
	}
	ack, err := s.Recv()
	if err != nil {
		return nil, 0, callErr("plugin consume: attach", err)
	}
	if ack.GetEnd() != ack.GetStart() {
		return nil, 0, fmt.Errorf("plugin consume: attach ack covers [%d, %d)", ack.GetStart(), ack.GetEnd())
	}
	return &ResultStream{s: s}, ack.GetStart(), nil
}

// Recv returns the next batch result; io.EOF when the plugin ended the
// stream cleanly (ring closed).
func (r *ResultStream) Recv() (BatchResult, error) {
	m, err := r.s.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return BatchResult{}, io.EOF
		}
		return BatchResult{}, callErr("plugin results", err)
	}
	return BatchResult{
		Start: m.GetStart(), End: m.GetEnd(), Stats: statsFromProto(m.GetStats()),
		Anomalies: anomaliesFromProto(m.GetAnomalies()), Err: cutText(m.GetError(), maxErrorText),
	}, nil
}
