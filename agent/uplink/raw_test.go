package uplink

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestAppendRawBatch: a frame built from stored encodings decodes as the
// FindingsBatch of those findings, each with the seq it was stored under.
func TestAppendRawBatch(t *testing.T) {
	var seqs []uint64
	var data [][]byte
	var want []*wirev1.Finding
	for i, seq := range []uint64{7, 8, 300, 1 << 40} {
		f := &wirev1.Finding{Seq: uint64(i), Detector: "d", Summary: strings.Repeat("s", i*100),
			Context: &wirev1.FindingContext{SrcIp: "10.0.0.1"}, Score: 0.5}
		b, err := proto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		seqs, data = append(seqs, seq), append(data, b)
		w := proto.Clone(f).(*wirev1.Finding)
		w.Seq = seq
		want = append(want, w)
	}
	frame, err := appendRawBatch([]byte("x"), seqs, data)
	if err != nil {
		t.Fatal(err)
	}
	if frame[0] != 'x' {
		t.Fatal("prefix lost")
	}
	var got wirev1.FindingsBatch
	if err := wirev1.NewReader(bytes.NewReader(frame[1:]), wirev1.MaxFrameSize).Read(&got); err != nil {
		t.Fatal(err)
	}
	if got.FirstSeq != 7 || len(got.Findings) != len(want) {
		t.Fatalf("got %v", &got)
	}
	for i := range want {
		if !proto.Equal(got.Findings[i], want[i]) {
			t.Errorf("finding %d: got %v want %v", i, got.Findings[i], want[i])
		}
	}
	big := [][]byte{make([]byte, wirev1.MaxFrameSize)}
	if _, err := appendRawBatch(nil, []uint64{1}, big); err == nil {
		t.Error("oversized batch framed")
	}
}
