package sdk

import (
	"reflect"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestProbesEncode: the probe batches are valid events that survive the
// plugin protocol's encoding. The file probe used to be 16 zero events, which
// the file-event encoding refuses (operation 0): the server's publish smoke
// test and the agent's update check failed every fileactivity model.
func TestProbesEncode(t *testing.T) {
	files := ProbeFiles()
	b, err := event.MarshalFiles(nil, files)
	if err != nil {
		t.Fatalf("ProbeFiles: %v", err)
	}
	back, err := event.UnmarshalFiles(b, nil)
	if err != nil {
		t.Fatalf("ProbeFiles decode: %v", err)
	}
	if !reflect.DeepEqual(back, files) {
		t.Fatalf("ProbeFiles changed in the round trip")
	}
	for i, f := range files {
		if f.Root != ProbeRoot || len(f.Path) <= len(ProbeRoot) || f.Path[:len(ProbeRoot)+1] != ProbeRoot+"/" {
			t.Errorf("probe file %d: %q not under the probe root %q", i, f.Path, f.Root)
		}
		if f.TimeNs >= ProbeStart.UnixNano()+1e9 {
			t.Errorf("probe file %d at %d: after the probe's first second", i, f.TimeNs)
		}
	}
	pkts := ProbePackets()
	buf := make([]byte, event.PacketRecordSize)
	for i := range pkts {
		pkts[i].Marshal(buf)
		var p event.Packet
		if err := p.Unmarshal(buf); err != nil {
			t.Fatalf("ProbePackets %d: %v", i, err)
		}
		if p != pkts[i] {
			t.Fatalf("ProbePackets %d changed in the round trip", i)
		}
	}
}

// TestIsProbe: the probe batches are recognised record for record, after the
// plugin protocol's encoding too; a batch that differs in one field, or is
// cut, is live data.
func TestIsProbe(t *testing.T) {
	files := ProbeFiles()
	b, err := event.MarshalFiles(nil, files)
	if err != nil {
		t.Fatal(err)
	}
	back, err := event.UnmarshalFiles(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !IsProbeFiles(files) || !IsProbeFiles(back) {
		t.Fatal("the file probe batch is not recognised")
	}
	moved := ProbeFiles()
	moved[7].TimeNs++
	for name, fs := range map[string][]event.File{"one event moved": moved, "cut": files[:15], "empty": nil} {
		if IsProbeFiles(fs) {
			t.Errorf("%s: taken for the probe", name)
		}
	}
	pkts := ProbePackets()
	if !IsProbePackets(pkts) {
		t.Fatal("the packet probe batch is not recognised")
	}
	other := ProbePackets()
	other[63].Length++
	for name, ps := range map[string][]event.Packet{"one packet longer": other, "cut": pkts[1:], "empty": nil} {
		if IsProbePackets(ps) {
			t.Errorf("%s: taken for the probe", name)
		}
	}
}
