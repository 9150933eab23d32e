package e2e

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/servertest"
	"github.com/vigil-edge/vigil/server/store"
	"github.com/vigil-edge/vigil/test/filework"
)

// lockedBuffer is a bytes.Buffer safe for a writer process and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFileactivityRunWatch is the whole product path with real binaries:
// the real server (in process), `vigil-agent enroll`, then `vigil-agent run
// --watch DIR`, which finds vigil-detector-fileactivity, the baseline bundle
// and ONNX Runtime next to itself. A ransomware simulation in the watched
// folder becomes a fileactivity finding stored on the server.
func TestFileactivityRunWatch(t *testing.T) {
	in := fileactivityInstall(t)
	srv := servertest.Start(t, servertest.Options{})
	state := filepath.Join(t.TempDir(), "agent")
	var stderr bytes.Buffer
	enroll := exec.Command(in.Agent, "enroll", "--server", srv.Addr, "--token", srv.EnrollToken(t, "acme"), "--ca-pin", srv.Pin, "--state", state)
	enroll.Stderr = &stderr
	if err := enroll.Run(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, stderr.String())
	}
	root := t.TempDir()
	share := filepath.Join(root, "share")
	if _, err := filework.CopySourceTree(share, 424243, 400); err != nil {
		t.Skipf("no Go source tree: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := ln.Addr().String()
	ln.Close()
	logs := &lockedBuffer{}
	agent := exec.Command(in.Agent, "run", "--state", state, "--metrics", metrics, "--watch", root, "--log-format", "json")
	agent.Env = append(agent.Environ(), "ONNXRUNTIME_LIB="+in.Inst.ORTLib)
	agent.Stderr = logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = agent.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = agent.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"watching"`) {
		if time.Now().After(deadline) {
			t.Fatalf("agent did not start watching:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	start := time.Now()
	n, err := filework.Ransomware(context.Background(), share, ".crypt", 9)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ransomware encrypted %d files in %v", n, time.Since(start).Round(time.Millisecond))
	for {
		fs := srv.ListFindings(t, store.FindingFilter{Detector: "fileactivity"})
		if len(fs) > 0 {
			f := fs[len(fs)-1]
			t.Logf("server has a finding %v after the attack started: %s %s count=%d top=%v: %s",
				time.Since(start).Round(time.Millisecond), f.Severity, f.Context.Path, f.Count, f.TopFeatures, f.Summary)
			if !strings.HasPrefix(f.Context.Path, share) || !strings.Contains(f.Summary, ".crypt") || f.Model.Name != "fileactivity" {
				t.Errorf("finding %+v", f)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("finding reached the server after %v", d)
			}
			return
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no fileactivity finding on the server after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
