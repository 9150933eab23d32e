package config

import (
	"strings"
	"testing"
)

// TestValidateRefusesDuplicateSources: an interface (or a capture file)
// named twice, in the file or once in the file and once more with --iface,
// which adds to it, passed Validate. `run` then opened two AF_PACKET sockets
// on the interface, each of which sees every frame, and pushed every packet
// into the detector twice: doubled packet counts and rates in every feature,
// so benign traffic looked like a flood. A file named twice was replayed
// twice. Watch roots are already refused when they overlap (agent/watch).
func TestValidateRefusesDuplicateSources(t *testing.T) {
	for _, tt := range []struct {
		name         string
		ifaces, pcap []string
		want         string // "" = valid
	}{
		{"distinct", []string{"eth0", "eth1"}, []string{"a.pcap", "b.pcap"}, ""},
		{"interface twice", []string{"eth0", "eth1", "eth0"}, nil, `capture.interfaces: "eth0" is named twice`},
		{"pcap twice", nil, []string{"/data/a.pcap", "/data//a.pcap"}, `capture.pcaps: "/data//a.pcap" is named twice`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Capture.Interfaces, c.Capture.Pcaps = tt.ifaces, tt.pcap
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
