package sdk

import (
	"math"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

func sampleRingResult() *pb.RingResult {
	m := &pb.RingResult{Start: 4096, End: 8192, Stats: &pb.BatchStats{Count: 4096, Anomalies: 2, P50: 0.25, P90: 0.5, P99: 1.5, Max: float32(math.Inf(1))}}
	for i := range 3 {
		m.Anomalies = append(m.Anomalies, &pb.Anomaly{
			Index: uint64(4096 + i*7), Score: 3.25 * float32(i+1), Threshold: 0.34,
			TopFeatures: []*pb.Contribution{{Name: "host_L1_open_rate", Contribution: 1.5}, {Name: "host_dst_ports", Contribution: 0}},
			Context:     map[string]string{"src_ip": "10.0.0.1", "dst_port": "443", "model": "nethost", "empty": ""},
		})
	}
	m.Anomalies = append(m.Anomalies, &pb.Anomaly{}) // all defaults
	m.Anomalies = append(m.Anomalies, &pb.Anomaly{
		Index: 5000, Score: 9, Threshold: 0.34,
		TopFeatures: []*pb.Contribution{{Name: "host_dst_ports", Contribution: 2}},
		Context:     map[string]string{"src_ip": "10.0.0.9", "model": "nethost"},
		Aggregate: &pb.Aggregate{Count: 1200, FirstNs: 1_700_000_000_000_000_000, LastNs: 1_700_000_001_500_000_000,
			Bytes: 72000, TcpSyn: 1199, Udp: 1, DstPorts: []uint32{1, 22, 80, 443, 65535, 0},
			DstAddrs: [][]byte{{10, 0, 0, 1}, make([]byte, 16)}, DstAddrsTruncated: true,
			LeadFirstNs: 1_699_999_990_000_000_000, LeadCount: 7, LeadBytes: 420},
	}, &pb.Anomaly{Index: 5001, Aggregate: &pb.Aggregate{}}, &pb.Anomaly{Aggregate: &pb.Aggregate{FirstNs: -5, LeadFirstNs: -9}})
	return m
}

// TestRingCodecMatchesProto: the hand-written RingResult codec reads what
// the protobuf codec writes and writes what it reads.
func TestRingCodecMatchesProto(t *testing.T) {
	c := newRingCodec()
	for _, m := range []*pb.RingResult{sampleRingResult(), {}, {Start: 1, End: 1, Stats: &pb.BatchStats{}}, {Error: "boom"}} {
		std, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.RingResult
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(std)}, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(m, &got) {
			t.Fatalf("decoded %v, want %v", &got, m)
		}
		bs, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		ours := bs.Materialize()
		if len(ours) != proto.Size(m) {
			t.Fatalf("encoded %d bytes, protobuf %d", len(ours), proto.Size(m))
		}
		var back pb.RingResult
		if err := proto.Unmarshal(ours, &back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(m, &back) {
			t.Fatalf("protobuf read %v, want %v", &back, m)
		}
	}
	// Other messages go to the standard codec.
	bs, err := c.Marshal(&pb.BatchStats{Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	var st pb.BatchStats
	if err := c.Unmarshal(bs, &st); err != nil || st.GetCount() != 3 {
		t.Fatalf("standard codec fallback: %v %v", err, &st)
	}
}

// FuzzRingCodecDecode: outside bytes never panic the decoder, and whatever
// it accepts that protobuf also accepts decodes to the same message.
func FuzzRingCodecDecode(f *testing.F) {
	good, _ := proto.Marshal(sampleRingResult())
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x22, 0xff, 0xff, 0xff, 0xff, 0x0f})
	// An anomaly whose aggregate has unpacked ports and a short address.
	f.Add([]byte{0x22, 0x0a, 0x32, 0x08, 0x48, 0x16, 0x48, 0x50, 0x52, 0x02, 0x0a, 0x00})
	c := newRingCodec()
	f.Fuzz(func(t *testing.T, b []byte) {
		var got pb.RingResult
		err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got)
		var want pb.RingResult
		if perr := proto.Unmarshal(b, &want); perr == nil && err == nil {
			got.ProtoReflect().SetUnknown(nil)
			clearUnknown(&want)
			if !proto.Equal(&want, &got) {
				t.Fatalf("codec decoded %v, protobuf %v", &got, &want)
			}
		}
	})
}

// clearUnknown drops unknown fields (the hand-written codec skips them).
func clearUnknown(m *pb.RingResult) {
	m.ProtoReflect().SetUnknown(nil)
	if m.Stats != nil {
		m.Stats.ProtoReflect().SetUnknown(nil)
	}
	for _, a := range m.Anomalies {
		a.ProtoReflect().SetUnknown(nil)
		for _, c := range a.TopFeatures {
			c.ProtoReflect().SetUnknown(nil)
		}
		if a.Aggregate != nil {
			a.Aggregate.ProtoReflect().SetUnknown(nil)
		}
	}
}

func BenchmarkRingCodec(b *testing.B) {
	m := sampleRingResult()
	for range 1000 {
		m.Anomalies = append(m.Anomalies, m.Anomalies[0])
	}
	std, _ := proto.Marshal(m)
	c := newRingCodec()
	b.Run("decode/proto", func(b *testing.B) {
		for b.Loop() {
			var x pb.RingResult
			_ = proto.Unmarshal(std, &x)
		}
	})
	b.Run("decode/ring", func(b *testing.B) {
		for b.Loop() {
			var x pb.RingResult
			_ = c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(std)}, &x)
		}
	})
	b.Run("encode/proto", func(b *testing.B) {
		for b.Loop() {
			_, _ = proto.Marshal(m)
		}
	})
	b.Run("encode/ring", func(b *testing.B) {
		for b.Loop() {
			_, _ = c.Marshal(m)
		}
	})
}
