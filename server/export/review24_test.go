package export

import (
	"context"
	"testing"
	"time"
)

// TestStartNowKeepsStoredZeroCursor: a "start: now" forwarder first started
// on an empty store stores the cursor 0. Findings that arrive while the
// SIEM is unreachable must still be delivered after a restart: the stored
// cursor 0 is a position, not "no cursor yet", so the restart must not move
// it to the newest finding and skip them.
func TestStartNowKeepsStoredZeroCursor(t *testing.T) {
	db := openDB(t)
	rcv := newReceiver(t, "tcp", nil)
	addr := rcv.addr
	rcv.kill() // the SIEM is down at first
	cfg := Config{Forwarders: []ForwarderConfig{{Name: "late", Type: "syslog", Network: "tcp", Address: addr, Start: "now",
		Interval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Timeout: time.Second}}}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	fill(t, db, "acme", 1, 5)
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats()["late"].Failures == 0 { // the forwarder has its cursor and tried the new findings
		if time.Now().After(deadline) {
			r.Stop()
			t.Fatal("the forwarder never tried to deliver")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.Stop()

	// The SIEM is back, the server restarts.
	rcv = &syslogReceiver{t: t, network: "tcp", addr: addr, got: map[int64]int{}}
	rcv.start()
	t.Cleanup(rcv.kill)
	r, err = Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	rcv.waitFor(t, 5, 10*time.Second)
}
