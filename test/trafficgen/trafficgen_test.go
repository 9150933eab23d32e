package trafficgen

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"
)

func TestWriteDeterministicAndReadable(t *testing.T) {
	cfg := Config{Seed: 7, Sessions: 50, Scan: true, ScanPorts: 100}
	var a, b bytes.Buffer
	ia, err := Write(&a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(&b, cfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same seed gave different captures")
	}
	if ia.ScanPackets != 200 {
		t.Fatalf("scan packets = %d, want 200 (SYN + RST per port)", ia.ScanPackets)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var last int64
	for {
		_, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if ts := ci.Timestamp.UnixNano(); ts < last {
			t.Fatalf("packet %d goes back in time", n)
		} else {
			last = ts
		}
		n++
	}
	if n != ia.Packets || n < 500 {
		t.Fatalf("read %d packets, wrote %d", n, ia.Packets)
	}
}
