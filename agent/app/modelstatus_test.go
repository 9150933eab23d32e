package app

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRunSendsModelStatusOfLastRun: a model status report the agent's last
// run made and could not deliver (it stopped offline) is in the state
// directory, and the next run sends it on its first session.
func TestRunSendsModelStatusOfLastRun(t *testing.T) {
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_abc.topsecret" })
	dir := filepath.Join(t.TempDir(), "state")
	if code, _, stderr := runCLI(t, "enroll", "--server", srv.Addr, "--token", srv.Token, "--ca-pin", srv.Pin(), "--state", dir); code != 0 {
		t.Fatalf("enroll: %s", stderr)
	}
	// The last run: a rollback reported, never connected.
	want := &wirev1.ModelStatus{RolloutId: "r1", State: "rolled_back", Reason: "health check failed", TimeUnixNano: 7,
		Model: &wirev1.ModelRef{Name: "netflow", Version: 9, Digest: "sha256:ab", Detector: "netflow"}}
	sd := state.Dir(dir)
	sp, err := spool.Open(sd.Path(state.SpoolFile), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	last, err := uplink.New(uplink.Config{Spool: sp, Credentials: sd, Log: slog.New(slog.DiscardHandler), StatusFile: sd.Path(uplink.StatusFile)})
	if err != nil {
		t.Fatal(err)
	}
	last.ReportModelStatus(want)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Metrics.Listen = "off"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{}, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("Run did not stop")
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, got := range srv.ModelStatuses() {
			if proto.Equal(got, want) {
				return
			}
		}
		select {
		case err := <-done:
			done <- err // for the deferred stop
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last run's model status never reached the server (it has %d)", len(srv.ModelStatuses()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
