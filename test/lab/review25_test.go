package lab

import (
	"net/netip"
	"testing"
	"time"
)

// TestHostAddressesDistinct: with the most clients Config allows, every
// host, the attacker included, has its own address in 10.99.0.0/16. Client
// 47 used to get 10.99.0.66, the attacker's: the truth file then labelled a
// benign client's traffic as the attacks', and two hosts answered ARP for
// one address. The first clients keep their addresses (the committed lab
// baseline was recorded with 6).
func TestHostAddressesDistinct(t *testing.T) {
	cfg := Config{Out: "x.pcap", Clients: 50}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	specs := hostSpecs(cfg.Clients)
	if len(specs) != 2+cfg.Clients {
		t.Fatalf("%d hosts for %d clients", len(specs), cfg.Clients)
	}
	lab16 := netip.MustParsePrefix("10.99.0.0/16")
	seen := map[netip.Addr]string{attackerAddr: "attacker"}
	for _, s := range specs {
		if !lab16.Contains(s.addr) {
			t.Errorf("%s: %s outside %s", s.name, s.addr, lab16)
		}
		if other, dup := seen[s.addr]; dup {
			t.Errorf("%s and %s share %s", s.name, other, s.addr)
		}
		seen[s.addr] = s.name
	}
	for i, want := range []string{"10.99.0.10", "10.99.0.11", "10.99.0.20", "10.99.0.21", "10.99.0.25"} {
		idx := []int{0, 1, 2, 3, 7}[i]
		if got := specs[idx].addr.String(); got != want {
			t.Errorf("%s: %s, want %s", specs[idx].name, got, want)
		}
	}
}

// TestConfigRefusesNegativeBeacon: a negative --beacon-every passed
// validation, and the beacon attack's jitter (rand.Int64N of a negative
// bound) then panicked in its goroutine mid-run, killing the lab before
// its deferred teardown: the namespaces and their processes were left.
func TestConfigRefusesNegativeBeacon(t *testing.T) {
	cfg := Config{Out: "x.pcap", BeaconEvery: -2 * time.Second, Attacks: []string{"beacon"}}
	if err := cfg.validate(); err == nil {
		t.Fatal("negative beacon period accepted")
	}
}
