package export

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestStartManyForwarders: Start filled the counters map while the
// forwarders it had already started read it (Runner.update), a data race
// that `make race` found in the rsyslog end-to-end test (vigil-server exit
// 66). 32 forwarders start together and deliver; run with -race (the old
// code is caught in about half of the runs).
func TestStartManyForwarders(t *testing.T) {
	db := openDB(t)
	fill(t, db, "acme", 1, 20)
	var cfg Config
	var rcvs []*syslogReceiver
	for i := range 32 {
		rcv := newReceiver(t, "tcp", nil)
		rcvs = append(rcvs, rcv)
		cfg.Forwarders = append(cfg.Forwarders, ForwarderConfig{Name: fmt.Sprintf("f%d", i), Type: "syslog", Network: "tcp",
			Address: rcv.addr, Interval: 20 * time.Millisecond})
	}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	for _, rcv := range rcvs {
		rcv.waitFor(t, 20, 10*time.Second)
	}
	if st := r.Stats(); len(st) != len(cfg.Forwarders) {
		t.Fatalf("stats of %d forwarders, want %d", len(st), len(cfg.Forwarders))
	}
}
