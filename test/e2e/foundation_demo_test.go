package e2e

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var demoCount = regexp.MustCompile(`findings at the server: (\d+)`)

// maxFindings is the largest count the demo printed.
func maxFindings(out string) int {
	n := 0
	for _, m := range demoCount.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		n = max(n, v)
	}
	return n
}

// startDemo runs test/demo/run.sh (make run) in its own process group on
// random loopback ports and a temporary directory.
func startDemo(t *testing.T, b bins, seconds int, extraEnv ...string) (*exec.Cmd, *syncBuffer, chan error, string) {
	t.Helper()
	script, err := filepath.Abs("../demo/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "demo")
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "VIGIL_BIN="+b.dir, "VIGIL_DEMO_DIR="+dir,
		"VIGIL_DEMO_QUIC="+freeUDPAddr(t), "VIGIL_DEMO_API="+freeTCP(t), "VIGIL_DEMO_SECONDS="+strconv.Itoa(seconds))
	cmd.Env = append(cmd.Env, extraEnv...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
	return cmd, out, done, dir
}

// groupGone waits (bounded) until no process of the group is left.
func groupGone(t *testing.T, pgid int, out *syncBuffer) {
	t.Helper()
	waitFor(t, 30*time.Second, func() string { return "every demo process exited\n" + out.String() }, func() bool {
		return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
	})
}

// TestDemoScript runs `make run`'s script for 20 s with the real binaries:
// PKI, server, token, enrollment, generated capture, agent; findings appear
// at the server, and every process has exited when the script ends.
func TestDemoScript(t *testing.T) {
	b := needBins(t)
	if _, err := os.Stat(b.trafficgen); err != nil {
		t.Skipf("no %s", b.trafficgen)
	}
	cmd, out, done, dir := startDemo(t, b, 20)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo script: %v\n%s\n%s\n%s", err, out.String(), tail(filepath.Join(dir, "server.log"), 20), tail(filepath.Join(dir, "agent.log"), 20))
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("demo script still running after 5 min\n%s", out.String())
	}
	groupGone(t, cmd.Process.Pid, out)
	// What the demo printed, and what the server stored (the database the
	// demo leaves behind, read after everything stopped).
	printed := maxFindings(out.String())
	var stored int
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "server", "vigil.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT COUNT(*) FROM findings`).Scan(&stored); err != nil {
		t.Fatalf("demo database: %v", err)
	}
	if printed == 0 || stored == 0 {
		t.Fatalf("demo: %d findings printed, %d stored; want some\n%s\n%s", printed, stored, out.String(), tail(filepath.Join(dir, "agent.log"), 30))
	}
	t.Logf("demo: %d findings shown while running, %d stored at the end", printed, stored)
	for _, s := range []string{"Vigil demo running", "admin token", "demo stopped"} {
		if !bytes.Contains([]byte(out.String()), []byte(s)) {
			t.Fatalf("demo output lacks %q\n%s", s, out.String())
		}
	}
	if !grepLog(filepath.Join(dir, "server.log"), "") {
		t.Fatal("no server log")
	}
}

// TestDemoScriptCtrlC runs the demo without a time limit and presses Ctrl-C
// (SIGINT to the whole foreground process group, as a terminal does) once
// findings arrive: the script stops everything and exits.
func TestDemoScriptCtrlC(t *testing.T) {
	b := needBins(t)
	if _, err := os.Stat(b.trafficgen); err != nil {
		t.Skipf("no %s", b.trafficgen)
	}
	cmd, out, done, _ := startDemo(t, b, 0, "VIGIL_DEMO_GENERATOR=1")
	waitFor(t, 4*time.Minute, func() string { return "findings in the demo output\n" + out.String() }, func() bool {
		select {
		case err := <-done:
			t.Fatalf("demo script exited early: %v\n%s", err, out.String())
		default:
		}
		return maxFindings(out.String()) > 0
	})
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 130) {
			t.Fatalf("demo script after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("demo script did not stop after Ctrl-C\n%s", out.String())
	}
	groupGone(t, pgid, out)
	if !bytes.Contains([]byte(out.String()), []byte("demo stopped")) {
		t.Fatalf("no clean stop message\n%s", out.String())
	}
}
