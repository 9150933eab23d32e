package uplink_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// statusConfig is the fixture's config with the model status file in its
// state directory, as the agent runs it.
func (f *fixture) statusConfig() uplink.Config {
	cfg := f.config()
	cfg.StatusFile = f.dir.Path(uplink.StatusFile)
	return cfg
}

// newClient makes a client without running it.
func newClient(t *testing.T, cfg uplink.Config) *uplink.Client {
	t.Helper()
	c, err := uplink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs c until stop is called (at the latest when the test ends).
func run(t *testing.T, c *uplink.Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// received waits until the server recorded want.
func received(t *testing.T, srv *uplinktest.Server, want *wirev1.ModelStatus) {
	t.Helper()
	eventually(t, fmt.Sprintf("server records %v", want), func() bool {
		for _, got := range srv.ModelStatuses() {
			if proto.Equal(got, want) {
				return true
			}
		}
		return false
	})
}

func report(detector, digest, rollout, state string, at int64) *wirev1.ModelStatus {
	return &wirev1.ModelStatus{RolloutId: rollout, State: state, TimeUnixNano: at,
		Model: &wirev1.ModelRef{Name: detector, Version: 3, Digest: digest, Detector: detector}}
}

// TestModelStatusSurvivesRestart: a model status report the agent made
// while offline, or wrote on a session that ended shortly after, reaches
// the server after the agent restarts. The reports were kept in memory
// only: a restart (a crash, an upgrade, systemd restarting the agent after
// a failed model) lost them, and the rollout never learned the outcome.
func TestModelStatusSurvivesRestart(t *testing.T) {
	t.Run("made offline", func(t *testing.T) {
		f := newFixture(t)
		want := report("netflow", "sha256:ab", "r1", "rolled_back", 42)
		a := newClient(t, f.statusConfig())
		a.ReportModelStatus(want) // never connected: the agent stops here

		b := newClient(t, f.statusConfig())
		if got := b.Stats().ModelStatusRestored; got != 1 {
			t.Fatalf("model_status_restored %d, want 1", got)
		}
		run(t, b)
		received(t, f.srv, want)
	})
	t.Run("written on a session that died, then stopped", func(t *testing.T) {
		f := newFixture(t)
		var discard atomic.Bool
		f.srv.Configure(func(s *uplinktest.Server) { s.DiscardControl = discard.Load })
		statuses := make(chan *wirev1.ModelStatus, 8)
		cfg := f.statusConfig()
		cfg.ModelStatus = statuses
		a := newClient(t, cfg)
		stopA := run(t, a)
		eventually(t, "connected", func() bool { return a.Stats().Connected })

		discard.Store(true)
		want := report("netflow", "sha256:ab", "r1", "active", 42)
		statuses <- want
		d0 := f.srv.Discarded()
		eventually(t, "status written and discarded", func() bool { return len(statuses) == 0 && f.srv.Discarded() >= d0+2 })
		stopA()
		discard.Store(false)

		b := newClient(t, f.statusConfig())
		run(t, b)
		received(t, f.srv, want)
	})
}

// TestModelStatusRestoredNeverReplacesNewer: a report restored from the
// file is older than any report made since the start: for the same
// (detector, digest, rollout) the newer one is kept and the restored one
// is never sent after it.
func TestModelStatusRestoredNeverReplacesNewer(t *testing.T) {
	f := newFixture(t)
	a := newClient(t, f.statusConfig())
	a.ReportModelStatus(report("netflow", "sha256:ab", "r1", "fetched", 1))
	other := report("fileactivity", "sha256:cd", "r2", "rejected", 2)
	a.ReportModelStatus(other)

	statuses := make(chan *wirev1.ModelStatus, 8)
	cfg := f.statusConfig()
	cfg.ModelStatus = statuses
	b := newClient(t, cfg)
	newer := report("netflow", "sha256:ab", "r1", "active", 3)
	statuses <- newer // the updater's report of the new run, taken as Run starts
	run(t, b)
	received(t, f.srv, newer)
	received(t, f.srv, other)
	// Let a few heartbeats pass: a restored report sent late would show.
	n := len(f.srv.Statuses())
	eventually(t, "two more heartbeats", func() bool { return len(f.srv.Statuses()) >= n+2 })
	var states []string
	for _, st := range f.srv.ModelStatuses() {
		if st.GetModel().GetDigest() == "sha256:ab" {
			states = append(states, st.State)
		}
	}
	if len(states) == 0 || states[len(states)-1] != "active" {
		t.Fatalf("server received %v for the netflow model, want active last", states)
	}
	for i, s := range states {
		if s == "fetched" && i > 0 {
			t.Fatalf("restored report sent after the newer one: %v", states)
		}
	}
}

// TestModelStatusFileBounded: the file keeps at most the reports the
// queue keeps (maxPendingStatus, 64); the oldest unsent report beyond that
// is dropped and counted, as in memory.
func TestModelStatusFileBounded(t *testing.T) {
	f := newFixture(t)
	a := newClient(t, f.statusConfig())
	const n = 65
	for i := range n {
		a.ReportModelStatus(report("netflow", fmt.Sprintf("sha256:%02d", i), "r", "offered", int64(i)))
	}
	if got := a.Stats().ModelStatusDropped; got != 1 {
		t.Fatalf("model_status_dropped %d, want 1", got)
	}
	b := newClient(t, f.statusConfig())
	if got := b.Stats().ModelStatusRestored; got != n-1 {
		t.Fatalf("model_status_restored %d, want %d", got, n-1)
	}
	run(t, b)
	eventually(t, "all kept reports received", func() bool {
		seen := map[string]bool{}
		for _, st := range f.srv.ModelStatuses() {
			seen[st.GetModel().GetDigest()] = true
		}
		return len(seen) == n-1
	})
	for _, st := range f.srv.ModelStatuses() {
		if st.GetModel().GetDigest() == "sha256:00" {
			t.Fatalf("the dropped report was sent: %v", st)
		}
	}
}

// TestModelStatusFileCorrupt: a damaged status file does not stop the
// agent: it is moved aside (kept for a look by hand), counted as long as
// it is there, logged once, and a new file takes its place.
func TestModelStatusFileCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(b []byte) []byte
		place   func(t *testing.T, path string) // instead of corrupt's bytes
	}{
		{"garbage", func([]byte) []byte { return []byte("\x00\x01not json at all") }, nil},
		{"empty", func([]byte) []byte { return nil }, nil},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, nil},
		{"bit flipped in a report", func(b []byte) []byte {
			c := append([]byte(nil), b...)
			i := strings.Index(string(c), `"reports":["`) + len(`"reports":["`) + 8
			c[i] ^= 0x01
			return c
		}, nil},
		{"other version", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"version":1`, `"version":99`, 1))
		}, nil},
		// Not read, never waited on: a named pipe without a writer would
		// hold the agent's start for good.
		{"named pipe", nil, func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"symbolic link", nil, func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			path := f.dir.Path(uplink.StatusFile)
			a := newClient(t, f.statusConfig())
			a.ReportModelStatus(report("netflow", "sha256:ab", "r1", "active", 1))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.place != nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				tc.place(t, path)
			} else if err := os.WriteFile(path, tc.corrupt(b), 0o600); err != nil {
				t.Fatal(err)
			}

			c := newClient(t, f.statusConfig())
			st := c.Stats()
			if st.ModelStatusCorruptFiles != 1 || st.ModelStatusRestored != 0 {
				t.Fatalf("corrupt files %d, restored %d; want 1, 0", st.ModelStatusCorruptFiles, st.ModelStatusRestored)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("%d files moved aside, want 1", len(aside))
			}
			if got := strings.Count(f.logs.String(), "model status file damaged"); got != 1 {
				t.Fatalf("logged %d times, want once:\n%s", got, f.logs.String())
			}

			// The agent goes on: new reports are kept and delivered.
			want := report("netflow", "sha256:ab", "r1", "rolled_back", 2)
			c.ReportModelStatus(want)
			if d := newClient(t, f.statusConfig()).Stats(); d.ModelStatusRestored != 1 || d.ModelStatusCorruptFiles != 1 {
				t.Fatalf("after a new report: restored %d, corrupt files %d; want 1, 1", d.ModelStatusRestored, d.ModelStatusCorruptFiles)
			}
			run(t, c)
			received(t, f.srv, want)
			eventually(t, "status counters", func() bool {
				for _, s := range f.srv.Statuses() {
					if s.Counters["uplink_model_status_corrupt_files"] == 1 {
						return true
					}
				}
				return false
			})
		})
	}
}

// TestModelStatusFileMode: the file holds what the agent tells the server
// about its models: readable by the agent only.
func TestModelStatusFileMode(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.statusConfig())
	c.ReportModelStatus(report("netflow", "sha256:ab", "r1", "offered", 1))
	fi, err := os.Stat(f.dir.Path(uplink.StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}
