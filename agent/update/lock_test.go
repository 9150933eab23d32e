package update

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStateLock: two Updaters on one state directory (a running agent and `vigil-agent update`)
// take turns. Recover waits while the other one's Install has staged a bundle no pointer names
// yet (its gc would remove it), and an Install waiting for the lock gives up when its context
// ends.
func TestStateLock(t *testing.T) {
	e := newEnv(t)
	install(t, e.updater(nil), e.bundle("nf", 1, nil, "model-1"))
	staged, release := make(chan struct{}), make(chan struct{})
	agent := e.updater(func(s Step) error {
		if s == StepStaged {
			close(staged)
			<-release
		}
		return nil
	})
	cli := e.updater(nil)

	v2 := e.bundle("nf", 2, nil, "model-2")
	installed := make(chan error, 1)
	go func() {
		res, err := agent.Install(context.Background(), Request{Path: v2})
		if err == nil && res.State != StateActive {
			err = errors.New("state " + res.State)
		}
		installed <- err
	}()
	<-staged

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := cli.Install(ctx, Request{Path: e.bundle("nf", 3, nil, "model-3")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("install while another one holds the lock: %v, want it to wait until its context ends", err)
	}
	recovered := make(chan error, 1)
	go func() { _, err := cli.Recover(); recovered <- err }()
	select {
	case err := <-recovered:
		t.Fatalf("Recover ran while another updater's Install held the lock (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-installed; err != nil {
		t.Fatalf("install: %v", err)
	}
	if err := <-recovered; err != nil {
		t.Fatalf("recover: %v", err)
	}
	a, ok := cli.Active("netflow", "netflow/v1")
	if !ok || a.Manifest.Version != 2 {
		t.Fatalf("active %+v %v, want version 2", a, ok)
	}
}

// TestGCKeepsFreshTemporaryFiles: gc removes only temporary files older than a minute (a crashed
// write), not the one another process is writing now.
func TestGCKeepsFreshTemporaryFiles(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	dir := u.detectorDir("netflow")
	fresh, stale := filepath.Join(dir, ".tmp-fresh.vgb-1"), filepath.Join(dir, ".tmp-stale.vgb-2")
	writeFile(t, fresh, []byte("being written"))
	writeFile(t, stale, []byte("crashed"))
	old := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Recover(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("fresh temporary file removed: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file kept: %v", err)
	}
}
