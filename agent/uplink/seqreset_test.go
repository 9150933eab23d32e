package uplink_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/enroll"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestSpoolResetRealServer: the agent ships seqs 1..N to the real server
// (servertest: endpoint and SQLite store, which de-duplicates by agent and
// seq), then its spool file is deleted while identity.json stays, so the
// new spool numbers from 1 again. Every finding of the new spool must be
// stored: the server's HelloAck tells the agent the highest seq it holds,
// and the agent renumbers its pending findings above it.
func TestSpoolResetRealServer(t *testing.T) {
	tests := []struct {
		name       string
		before     int // findings shipped from the first spool
		offline    int // findings appended to the new spool before the uplink starts
		afterStart int // findings appended to the new spool while connected
	}{
		{"fewer new findings than old", 300, 120, 50},
		// More new findings than the old spool's highest seq, all made
		// before the first contact: the new spool's next seq is already
		// above the server's highest, yet seqs 1..before would clash.
		{"more new findings than old, offline", 200, 350, 0},
		{"nothing pending at reconnect", 150, 0, 80},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := servertest.Start(t, servertest.Options{})
			f := &fixture{dir: state.Dir(filepath.Join(t.TempDir(), "agent")), logs: &syncBuf{}}
			f.log = testLogger(f.logs)
			id, err := enroll.Enroll(context.Background(), enroll.Options{
				Server: srv.Addr, Token: srv.EnrollToken(t, "acme"), Pin: srv.Pin, StateDir: f.dir, Timeout: 10 * time.Second,
			}, f.log)
			if err != nil {
				t.Fatal(err)
			}
			path := f.dir.Path(state.SpoolFile)
			open := func() *spool.Spool {
				sp, err := spool.Open(path, spool.Options{})
				if err != nil {
					t.Fatal(err)
				}
				return sp
			}
			count := func() int { return srv.CountFindings(t, id.AgentID) }

			f.spool = open()
			f.append(t, tc.before, wirev1.Severity_SEVERITY_MEDIUM)
			stop := runClient(t, f.config())
			eventually(t, "the first spool's findings stored", func() bool {
				return count() == tc.before && f.spool.Stats().Depth == 0
			})
			stop()
			if err := f.spool.Close(); err != nil {
				t.Fatal(err)
			}

			// The spool is lost; identity.json stays.
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			f.spool = open()
			t.Cleanup(func() { f.spool.Close() })
			if st := f.spool.Stats(); st.NextSeq != 1 {
				t.Fatalf("new spool's next seq %d, want 1", st.NextSeq)
			}
			f.append(t, tc.offline, wirev1.Severity_SEVERITY_HIGH)
			c, stop := startClient(t, f.config())
			defer stop()
			if tc.afterStart > 0 {
				eventually(t, "connected", func() bool { return c.Stats().Connects > 0 })
				f.append(t, tc.afterStart, wirev1.Severity_SEVERITY_LOW)
			}
			want := tc.before + tc.offline + tc.afterStart
			deadline := time.Now().Add(20 * time.Second)
			for count() < want || f.spool.Stats().Depth > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("server stored %d findings, want %d (the new spool's findings were taken for duplicates); spool %v",
						count(), want, f.spool.Stats())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := count(); n != want {
				t.Fatalf("server stored %d findings, want exactly %d", n, want)
			}
			checkRenumbered(t, c, f)
		})
	}
}

// runClient runs a client until the returned stop is called.
func runClient(t *testing.T, cfg uplink.Config) (stop func()) {
	_, stop = startClient(t, cfg)
	return stop
}

func startClient(t *testing.T, cfg uplink.Config) (*uplink.Client, func()) {
	t.Helper()
	c, err := uplink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return c, stop
}

func testLogger(w *syncBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkRenumbered checks that the renumbering was counted.
func checkRenumbered(t *testing.T, c *uplink.Client, f *fixture) {
	t.Helper()
	st := c.Stats()
	if st.SeqRenumbers != 1 {
		t.Errorf("seq_renumbers %d, want 1", st.SeqRenumbers)
	}
	if !strings.Contains(f.logs.String(), "renumbered the waiting findings") {
		t.Errorf("renumbering not logged:\n%s", f.logs.String())
	}
}

// TestSpoolResetOlderServer: an older server sends no highest seq; the agent
// then leaves its seqs alone (as before) and keeps its new spool
// uncompared, so that the first server that does send one renumbers it.
func TestSpoolResetOlderServer(t *testing.T) {
	f := newFixture(t)
	f.append(t, 40, wirev1.Severity_SEVERITY_MEDIUM)
	_, stop := startClient(t, f.config())
	eventually(t, "first spool delivered", func() bool { return len(f.srv.Findings()) == 40 && f.spool.Stats().Depth == 0 })
	stop()
	path := f.dir.Path(state.SpoolFile)
	f.spool.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(path, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	f.spool = sp

	f.srv.Configure(func(s *uplinktest.Server) { s.NoHighestSeq = true })
	f.append(t, 10, wirev1.Severity_SEVERITY_HIGH)
	c, stop := startClient(t, f.config())
	eventually(t, "acked by the older server", func() bool { return f.spool.Stats().Depth == 0 })
	stop()
	if st := c.Stats(); st.SeqRenumbers != 0 || len(f.srv.Findings()) != 40 {
		t.Fatalf("older server: %d renumbers, %d findings stored (the 10 new ones taken for duplicates, as before)", st.SeqRenumbers, len(f.srv.Findings()))
	}

	f.srv.Configure(func(s *uplinktest.Server) { s.NoHighestSeq = false })
	f.append(t, 10, wirev1.Severity_SEVERITY_HIGH)
	c, _ = startClient(t, f.config())
	eventually(t, "new findings stored", func() bool { return len(f.srv.Findings()) == 50 && f.spool.Stats().Depth == 0 })
	if st := c.Stats(); st.SeqRenumbers != 1 || st.FindingsRenumbered != 10 {
		t.Fatalf("after the server upgrade: %d renumbers of %d findings, want 1 of 10", st.SeqRenumbers, st.FindingsRenumbered)
	}
}
