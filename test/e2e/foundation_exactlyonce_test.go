package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// senderProgress reads the vigil-e2e-sender progress file (zero before the
// first write).
func senderProgress(t testing.TB, path string) (p struct {
	Assigned  uint64 `json:"assigned"`
	Depth     uint64 `json:"depth"`
	AckedSeq  uint64 `json:"acked_seq"`
	Dropped   uint64 `json:"dropped"`
	Connected bool   `json:"connected"`
	Connects  uint64 `json:"connects"`
	Done      bool   `json:"done"`
}) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return p
	}
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("progress %s: %v: %q", path, err, data)
	}
	return p
}

// TestFoundationExactlyOnce: one agent (the agent's own spool and uplink,
// in the vigil-e2e-sender test binary, enrolled by the real vigil-agent)
// sends 100,000 findings to the real vigil-server while the server is killed
// with SIGKILL and restarted twice and the agent is killed with SIGKILL and
// restarted once. The server ends with exactly 100,000 distinct findings,
// seqs 1..100,000.
func TestFoundationExactlyOnce(t *testing.T) {
	b := needBins(t)
	total := 100000
	if s := os.Getenv("VIGIL_E2E_EXACTLY_ONCE_N"); s != "" {
		total, _ = strconv.Atoi(s)
	}
	sender := helperBinary(t, "vigil-e2e-sender")
	began := time.Now()
	d := newDeployment(t, b, "e2e.vigil")
	d.start()
	a := d.enroll("acme")
	id := a.id.AgentID
	progress := filepath.Join(t.TempDir(), "progress.json")
	senderLog := filepath.Join(filepath.Dir(progress), "sender.log")
	// Appends are paced (about 60 s of production at the target) so that the
	// kills below land while findings are still being produced and sent.
	rate := strconv.Itoa(max(total/60, 1))
	startSender := func() *proc {
		return startProc(t, "vigil-e2e-sender", senderLog, nil, sender, "--state", a.dir, "--total", strconv.Itoa(total),
			"--rate", rate, "--batch", "250", "--progress", progress)
	}
	s := startSender()
	phase := func(what string) { t.Logf("%6.1fs %s (server has %d)", time.Since(began).Seconds(), what, d.count(id)) }
	// reach waits until the server holds at least n findings of the agent.
	reach := func(n int) {
		waitFor(t, 3*time.Minute, func() string {
			return fmt.Sprintf("%d findings at the server (have %d)\n%s\n%s", n, d.count(id), tail(senderLog, 10), tail(d.log, 10))
		}, func() bool {
			if s.exited() {
				t.Fatalf("sender exited early: %v\n%s", s.err, tail(senderLog, 20))
			}
			return d.count(id) >= n
		})
	}
	crashServer := func(at int) {
		reach(at)
		d.closeDB()
		d.kill()
		phase("server SIGKILLed")
		// The agent keeps producing while the server is down; restart once
		// the sender has noticed (its idle timeout) or after a bounded wait.
		waitFor(t, 60*time.Second, func() string { return "sender notices the dead server" }, func() bool {
			return !senderProgress(t, progress).Connected
		})
		d.start()
		phase("server restarted")
	}
	crashServer(total / 10)
	crashServer(total * 3 / 10)
	reach(total / 2)
	if p := senderProgress(t, progress); p.Assigned >= uint64(total) {
		t.Logf("note: the sender had assigned every seq before its SIGKILL (machine fast; still a valid run)")
	}
	s.kill(t)
	phase("agent SIGKILLed")
	s = startSender()
	phase("agent restarted")
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("sender: %v\n%s", s.err, tail(senderLog, 20))
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("sender not done: %+v, server has %d\n%s", senderProgress(t, progress), d.count(id), tail(senderLog, 20))
	}
	phase("sender done (every finding acknowledged)")
	d.stop()
	d.closeDB()
	st := d.stats(id)
	if st.Count != total || st.Distinct != total || st.MinSeq != 1 || st.MaxSeq != int64(total) {
		t.Fatalf("server holds %+v for agent %s, want exactly %d distinct findings, seqs 1..%d", st, id, total, total)
	}
	p := senderProgress(t, progress)
	if p.Assigned != uint64(total) || p.Dropped != 0 || p.Depth != 0 {
		t.Fatalf("sender progress %+v", p)
	}
	t.Logf("exactly %d findings after 2 server SIGKILLs and 1 agent SIGKILL, in %s", total, time.Since(began).Round(time.Second))
}
