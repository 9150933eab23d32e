package export

import (
	"context"
	"testing"
	"time"
)

// TestStartNowKeepsStoredZeroCursor: a "start: now" forwarder first started
// on an empty store stores the cursor 0. Findings that arrive before it
// delivers anything (the SIEM is down, the server restarts) must still be
// delivered after the restart: the stored cursor 0 is a position, not "no
// cursor yet", so the restart must not move it to the newest finding and
// skip them. (The first start is the stored 0 itself: waiting for a live
// forwarder to store it raced with the findings under load.)
func TestStartNowKeepsStoredZeroCursor(t *testing.T) {
	db := openDB(t)
	if err := db.SetForwarderCursor(context.Background(), "late", 0); err != nil {
		t.Fatal(err)
	}
	fill(t, db, "acme", 1, 5)
	rcv := newReceiver(t, "tcp", nil)
	cfg := Config{Forwarders: []ForwarderConfig{{Name: "late", Type: "syslog", Network: "tcp", Address: rcv.addr, Start: "now",
		Interval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Timeout: time.Second}}}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	rcv.waitFor(t, 5, 10*time.Second)
}
