package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/servertest"
)

// agentBin returns the vigil-agent binary of VIGIL_BIN, or skips.
func agentBin(t *testing.T) string {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("real-binary test: set VIGIL_E2E=1 and VIGIL_BIN (make test does)")
	}
	bin := filepath.Join(os.Getenv("VIGIL_BIN"), "vigil-agent")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no vigil-agent binary at %s (set VIGIL_BIN)", bin)
	}
	return bin
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type agentStatus struct {
	AgentID string `json:"agent_id"`
	Running bool   `json:"running"`
	Spool   *struct {
		Depth   uint64 `json:"depth"`
		Dropped uint64 `json:"dropped"`
		NextSeq uint64 `json:"next_seq"`
	} `json:"spool"`
}

func status(t *testing.T, bin, dir, metrics string) agentStatus {
	t.Helper()
	out, err := exec.Command(bin, "status", "--json", "--state", dir, "--metrics", metrics).Output()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var st agentStatus
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// TestAgentBinaryKillAndRestart runs the real vigil-agent binary against
// the real server (in process): enroll, run with the demo generator, SIGKILL
// the agent, restart it, and check that the server holds exactly the
// findings the agent's spool ever assigned (none lost, none duplicated).
func TestAgentBinaryKillAndRestart(t *testing.T) {
	bin := agentBin(t)
	srv := servertest.Start(t, servertest.Options{})
	dir := filepath.Join(t.TempDir(), "agent")
	var stderr bytes.Buffer
	enroll := exec.Command(bin, "enroll", "--server", srv.Addr, "--token", srv.EnrollToken(t, "acme"), "--ca-pin", srv.Pin, "--state", dir)
	enroll.Stderr = &stderr
	if err := enroll.Run(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, stderr.String())
	}
	metrics := freeTCPAddr(t)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"run", "--state", dir, "--metrics", metrics}, args...)...)
		cmd.Stderr = &bytes.Buffer{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	agent := start("--demo-findings", "400/s")
	id := func() string {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if st := status(t, bin, dir, metrics); st.Running {
				return st.AgentID
			}
			if time.Now().After(deadline) {
				t.Fatal("agent not running")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for srv.CountFindings(t, id) < 500 {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d findings", srv.CountFindings(t, id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = agent.Process.Signal(syscall.SIGKILL)
	_ = agent.Wait()

	agent = start() // no generator: only drain the spool
	for {
		st := status(t, bin, dir, metrics)
		if st.Running && st.Spool != nil && st.Spool.Depth == 0 {
			if got, want := srv.CountFindings(t, id), int(st.Spool.NextSeq-1-st.Spool.Dropped); got != want {
				t.Fatalf("server has %d findings, the agent assigned %d", got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool not drained: %+v", st.Spool)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = agent.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, agent.Stderr.(*bytes.Buffer).String())
		}
	case <-time.After(20 * time.Second):
		_ = agent.Process.Kill()
		t.Fatal("agent did not stop on SIGTERM")
	}
}
