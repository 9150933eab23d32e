package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
	"github.com/vigil-edge/vigil/plugins/sdk/ring"
)

// Batch bounds of the ring consumer.
const (
	DefaultMaxBatch = 4096
	MaxMaxBatch     = 1 << 16
	DefaultMaxDelay = 5 * time.Millisecond
	MaxMaxDelay     = time.Second
)

// server adapts a Detector to the gRPC Detector service (plugin side).
type server struct {
	pb.UnimplementedDetectorServer
	d   Detector
	log *slog.Logger

	scoreMu  sync.Mutex // ScorePackets / ScoreFiles are never concurrent
	loadMu   sync.Mutex // LoadModel is never concurrent
	scratch  []float32
	consumed atomic.Bool

	batches, records, anomalies, scoreErrors, panics atomic.Uint64
}

func newServer(d Detector, log *slog.Logger) *server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &server{d: d, log: log}
}

func (s *server) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	in := s.d.Info()
	return &pb.InfoResponse{
		Name: in.Name, Version: in.Version, EventKind: kindToProto(in.EventKind),
		FeatureSets: in.FeatureSets, Dim: uint32(max(in.Dim, 0)),
		RingLayoutVersion: ring.LayoutVersion, RecordLayoutVersion: event.PacketLayoutVersion,
	}, nil
}

func (s *server) LoadModel(ctx context.Context, req *pb.LoadModelRequest) (*pb.LoadModelResponse, error) {
	if req.GetBundlePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "empty bundle path")
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	m, err := s.d.LoadModel(ctx, req.GetBundlePath())
	if err != nil {
		s.log.Warn("model load failed, previous model stays active", "path", req.GetBundlePath(), "err", err)
		return nil, status.Errorf(codes.FailedPrecondition, "load model %s: %v", req.GetBundlePath(), err)
	}
	s.log.Info("model loaded", "name", m.Name, "version", m.Version, "digest", m.Digest)
	return &pb.LoadModelResponse{Model: modelToProto(m)}, nil
}

func (s *server) Health(ctx context.Context, _ *pb.HealthRequest) (*pb.HealthResponse, error) {
	h := s.d.Health(ctx)
	st := make(map[string]uint64, len(h.Stats)+5)
	for k, v := range h.Stats {
		st[k] = v
	}
	st["sdk_batches"] = s.batches.Load()
	st["sdk_records"] = s.records.Load()
	st["sdk_anomalies"] = s.anomalies.Load()
	st["sdk_score_errors"] = s.scoreErrors.Load()
	st["sdk_panics"] = s.panics.Load()
	return &pb.HealthResponse{
		Ok: h.OK, Message: h.Message, Model: modelToProto(h.Model),
		MemoryBytes: h.MemoryBytes, Stats: st,
	}, nil
}

// Score scores one packed batch.
func (s *server) Score(ctx context.Context, req *pb.ScoreRequest) (*pb.ScoreResponse, error) {
	size := int(req.GetRecordSize())
	data := req.GetRecords()
	switch req.GetKind() {
	case pb.EventKind_EVENT_KIND_PACKET:
		if size != event.PacketRecordSize || req.GetLayoutVersion() != event.PacketLayoutVersion {
			return nil, status.Errorf(codes.InvalidArgument, "packet records: size %d layout %d, want %d layout %d",
				size, req.GetLayoutVersion(), event.PacketRecordSize, event.PacketLayoutVersion)
		}
		if len(data)%size != 0 {
			return nil, status.Errorf(codes.InvalidArgument, "%d bytes is not a whole number of %d-byte records", len(data), size)
		}
		pkts := make([]event.Packet, len(data)/size)
		for i := range pkts {
			_ = pkts[i].Unmarshal(data[i*size:])
		}
		res, err := s.scorePackets(ctx, pkts)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "score packets: %v", err)
		}
		return &pb.ScoreResponse{Stats: statsToProto(res.Stats), Anomalies: anomaliesToProto(res.Anomalies, 0, len(pkts))}, nil
	case pb.EventKind_EVENT_KIND_FILE:
		fs, ok := s.d.(FileScorer)
		if !ok {
			return nil, status.Error(codes.Unimplemented, "detector does not score file events")
		}
		if req.GetLayoutVersion() != event.FileLayoutVersion {
			return nil, status.Errorf(codes.InvalidArgument, "file batch layout %d, want %d", req.GetLayoutVersion(), event.FileLayoutVersion)
		}
		files, err := event.UnmarshalFiles(data, nil)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "decode file batch: %v", err)
		}
		res, err := s.score(func() (Result, error) { return fs.ScoreFiles(ctx, files) }, len(files))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "score files: %v", err)
		}
		return &pb.ScoreResponse{Stats: statsToProto(res.Stats), Anomalies: anomaliesToProto(res.Anomalies, 0, len(files))}, nil
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown event kind %d", req.GetKind())
	}
}

func (s *server) scorePackets(ctx context.Context, pkts []event.Packet) (Result, error) {
	return s.score(func() (Result, error) { return s.d.ScorePackets(ctx, pkts) }, len(pkts))
}

// score runs one scoring call under scoreMu, turns a panic into an error (a
// crafted record must not take the plugin down), and fills Stats.
func (s *server) score(f func() (Result, error), n int) (res Result, err error) {
	s.scoreMu.Lock()
	defer s.scoreMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			s.log.Error("detector panicked while scoring", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, err = Result{}, fmt.Errorf("detector panic: %v", r)
		}
	}()
	s.batches.Add(1)
	s.records.Add(uint64(n))
	if n == 0 {
		return Result{}, nil
	}
	res, err = f()
	if err != nil {
		s.scoreErrors.Add(1)
		return Result{}, err
	}
	if len(res.Scores) == n {
		res.Stats, s.scratch = ComputeStats(res.Scores, int(CountRecords(res.Anomalies)), s.scratch)
	} else {
		res.Stats.Count = uint64(n)
		res.Stats.Anomalies = CountRecords(res.Anomalies)
	}
	s.anomalies.Add(CountRecords(res.Anomalies))
	return res, nil
}

// Consume attaches to the ring and streams results until the host cancels
// the call or closes the ring.
func (s *server) Consume(req *pb.ConsumeRequest, stream pb.Detector_ConsumeServer) error {
	ringFD, wakeFD := int(req.GetRingFd()), int(req.GetWakeFd())
	if ringFD < 3 || wakeFD < 3 || ringFD == wakeFD || ringFD > 1<<16 || wakeFD > 1<<16 {
		return status.Errorf(codes.InvalidArgument, "bad descriptors ring=%d wake=%d", ringFD, wakeFD)
	}
	maxBatch := int(req.GetMaxBatch())
	if maxBatch == 0 {
		maxBatch = DefaultMaxBatch
	}
	maxDelay := time.Duration(req.GetMaxDelayUs()) * time.Microsecond
	if req.GetMaxDelayUs() == 0 {
		maxDelay = DefaultMaxDelay
	}
	if maxBatch > MaxMaxBatch || maxDelay > MaxMaxDelay {
		return status.Errorf(codes.InvalidArgument, "batch bounds %d records / %s too large", maxBatch, maxDelay)
	}
	if !s.consumed.CompareAndSwap(false, true) {
		return status.Error(codes.FailedPrecondition, "ring already attached")
	}
	r, err := ring.Attach(os.NewFile(uintptr(ringFD), "vigil-ring"))
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "attach ring fd %d: %v", ringFD, err)
	}
	defer r.Close()
	if err := unix.SetNonblock(wakeFD, true); err != nil {
		return status.Errorf(codes.InvalidArgument, "wake fd %d: %v", wakeFD, err)
	}
	c := ring.NewConsumer(r, os.NewFile(uintptr(wakeFD), "vigil-wake"))
	defer c.Close()
	ctx := stream.Context()
	stop := context.AfterFunc(ctx, c.Interrupt)
	defer stop()

	// The first message acknowledges the attach: [tail, tail).
	if err := stream.Send(&pb.RingResult{Start: c.Tail(), End: c.Tail(), Stats: &pb.BatchStats{}}); err != nil {
		return fmt.Errorf("send attach ack: %w", err)
	}
	s.log.Info("ring attached", "slots", r.Capacity(), "base", r.Base(), "max_batch", maxBatch, "max_delay", maxDelay)
	buf := make([]event.Packet, maxBatch)
	for {
		start, n, err := c.Next(ctx, buf, maxDelay)
		switch {
		case errors.Is(err, ring.ErrClosed):
			s.log.Info("ring closed by the agent", "tail", c.Tail())
			return nil
		case err != nil && ctx.Err() != nil:
			return status.FromContextError(ctx.Err()).Err()
		case err != nil:
			return status.Errorf(codes.DataLoss, "ring: %v", err)
		}
		res, serr := s.scorePackets(ctx, buf[:n])
		msg := &pb.RingResult{Start: start, End: start + uint64(n)}
		if serr != nil {
			msg.Error = serr.Error()
			msg.Stats = &pb.BatchStats{Count: uint64(n)}
		} else {
			msg.Stats = statsToProto(res.Stats)
			msg.Anomalies = anomaliesToProto(res.Anomalies, start, n)
		}
		// Release after scoring and before sending: tail counts the records the
		// detector has seen. A crash between the two loses the results of one
		// batch, which the host counts separately (unreported).
		c.Release(n)
		if err := stream.Send(msg); err != nil {
			return fmt.Errorf("send ring result: %w", err)
		}
	}
}
