package sdk

import (
	"context"
	"runtime"
	"testing"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

// TestRingCodecRefusesInvalidUTF8: the hand-written RingResult decoder must
// refuse what the standard protobuf codec refuses. A plugin (compromised by
// the records it parses) that put invalid UTF-8 in a context value, a
// feature name or the error text got it accepted, and the agent's finding
// built from it could not be marshalled: the spool refused the whole batch
// of findings and the packet pipeline stopped.
func TestRingCodecRefusesInvalidUTF8(t *testing.T) {
	for name, m := range map[string]*pb.RingResult{
		"context value": {Start: 1, End: 2, Anomalies: []*pb.Anomaly{{Index: 1, Context: map[string]string{"src_ip": "10.0.0.\xff"}}}},
		"context key":   {Start: 1, End: 2, Anomalies: []*pb.Anomaly{{Index: 1, Context: map[string]string{"\xc3": "x"}}}},
		"feature name":  {Start: 1, End: 2, Anomalies: []*pb.Anomaly{{Index: 1, TopFeatures: []*pb.Contribution{{Name: "host_\xfe", Contribution: 1}}}}},
		"error":         {Start: 1, End: 2, Error: "boom \xff"},
	} {
		t.Run(name, func(t *testing.T) {
			b := appendRingResult(nil, m) // writes the bytes as given, like a hostile plugin
			if err := proto.Unmarshal(b, &pb.RingResult{}); err == nil {
				t.Fatal("the standard codec accepts the message; the test is wrong")
			}
			var got pb.RingResult
			if err := newRingCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err == nil {
				t.Errorf("ring codec accepted invalid UTF-8: %v", &got)
			}
		})
	}
}

// TestRingResultDecodeBounded: a plugin (compromised by the records it
// parses) controls the bytes of its result messages, and the agent's
// go-plugin connection accepts messages of up to 2 GiB. Two bytes on the
// wire made an anomaly (or a contribution, or a context entry) of a
// hundred bytes and more in the agent: a 4 MiB message of empty anomalies
// cost it about 390 MB. A result holds at most one anomaly per record of a
// batch, and the decoder must refuse more, and bound the elements of a
// message, before it allocates them; what a real batch of that size
// carries must still decode.
func TestRingResultDecodeBounded(t *testing.T) {
	codec := newRingCodecFor(DefaultMaxBatch)
	contribs := []byte{0x22, 0x22} // an anomaly of 17 empty contributions
	for range MaxTopContributions + 1 {
		contribs = append(contribs, 0x22, 0x00)
	}
	for name, unit := range map[string][]byte{
		"empty anomalies":     {0x22, 0x00},                         // field 4, length 0
		"empty contributions": contribs,                             //
		"empty context":       {0x22, 0x02, 0x2a, 0x00},             // an anomaly with one empty context entry
		"empty aggregates":    {0x22, 0x04, 0x32, 0x02, 0x52, 0x00}, // an anomaly whose aggregate has one empty address
	} {
		t.Run(name, func(t *testing.T) {
			b := make([]byte, 0, 4<<20)
			for len(b)+len(unit) <= cap(b) {
				b = append(b, unit...)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var m pb.RingResult
			err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &m)
			var as []Anomaly
			if err == nil {
				as = anomaliesFromProto(m.GetAnomalies())
			}
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d-byte message: %d anomalies, err %v, %d MB allocated", len(b), len(as), err, alloc>>20)
			if err == nil || alloc > 32<<20 {
				t.Errorf("decoding a %d-byte result of %s: %d MB allocated, err %v; want an error, at most 32 MB",
					len(b), name, alloc>>20, err)
			}
		})
	}

	// A full batch of real anomalies, each with its top features, a
	// netflow-sized context and an aggregate, decodes.
	full := &pb.RingResult{Start: 1 << 20, End: 1<<20 + DefaultMaxBatch, Stats: &pb.BatchStats{Count: DefaultMaxBatch}}
	for i := range DefaultMaxBatch {
		a := &pb.Anomaly{Index: uint64(1<<20 + i), Score: 2, Threshold: 1, Context: map[string]string{},
			Aggregate: &pb.Aggregate{Count: 1, DstPorts: []uint32{uint32(i)}, DstAddrs: [][]byte{{10, 0, byte(i >> 8), byte(i)}}}}
		for k := range 5 {
			a.TopFeatures = append(a.TopFeatures, &pb.Contribution{Name: "host_feature_" + string(rune('a'+k)), Contribution: 1})
		}
		for k := range 14 {
			a.Context["key_"+string(rune('a'+k))] = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		}
		full.Anomalies = append(full.Anomalies, a)
	}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxRingResultBytes(DefaultMaxBatch) {
		t.Errorf("a full batch's result of %d bytes exceeds the stream's limit of %d", len(b), maxRingResultBytes(DefaultMaxBatch))
	}
	var got pb.RingResult
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
		t.Fatalf("a full batch's result: %v", err)
	}
	if !proto.Equal(&got, full) {
		t.Error("a full batch's result decoded differently")
	}
}

// hostileScorer answers every Score call with resp.
type hostileScorer struct {
	pb.UnimplementedDetectorServer
	resp *pb.ScoreResponse
}

func (h hostileScorer) Score(context.Context, *pb.ScoreRequest) (*pb.ScoreResponse, error) {
	return h.resp, nil
}

type hostilePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	resp *pb.ScoreResponse
}

func (p hostilePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterDetectorServer(s, hostileScorer{resp: p.resp})
	return nil
}

func (hostilePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{rpc: pb.NewDetectorClient(c)}, nil
}

// TestScoreResultDecodeBounded: the answers of unary Score calls (the file
// plugin's path) were decoded by the standard codec, without bounds: a 4
// MiB answer of empty anomalies to a batch of 16 records cost the agent
// hundreds of megabytes (and the connection accepts up to 2 GiB). They are
// bounded by the batch's records as the ring's results are.
func TestScoreResultDecodeBounded(t *testing.T) {
	// 2M empty anomalies: 4 MiB on the wire.
	resp := &pb.ScoreResponse{Anomalies: make([]*pb.Anomaly, (4<<20)/2-16)}
	for i := range resp.Anomalies {
		resp.Anomalies[i] = &pb.Anomaly{}
	}
	c, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{PluginName: hostilePlugin{resp: resp}})
	t.Cleanup(func() { _ = c.Close() })
	raw, err := c.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	cl := raw.(*Client)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := cl.ScorePackets(context.Background(), make([]event.Packet, 16))
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("ScorePackets of 16 records: %d anomalies, err %v, %d MB allocated", len(res.Anomalies), err, alloc>>20)
	// The plugin's side, in this process, marshals 4 MiB.
	if err == nil || alloc > 32<<20 {
		t.Errorf("an answer of 2M anomalies to 16 records: %d MB allocated, err %v; want an error, at most 32 MB", alloc>>20, err)
	}
}
