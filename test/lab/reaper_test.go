package lab

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sigkillHelperEnv makes TestLabSIGKILLHelper run a lab (its value is the
// directory for the capture) until it is killed.
const sigkillHelperEnv = "VIGIL_LAB_SIGKILL_HELPER"

// TestLabSIGKILLLeavesNothing (VIGIL_E2E=1, root): a lab process killed
// with SIGKILL while it runs leaves no namespace (with them its veths and
// bridge), no server it started inside them and no temporary directory
// (sshd's host key). They used to stay until someone ran `vigil-lab
// --cleanup` (and the directories for good). The lab runs in a helper process (this
// test binary), alone killed: the servers in its namespaces survive it
// unless something removes them.
func TestLabSIGKILLLeavesNothing(t *testing.T) {
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("VIGIL_E2E=1 not set: the lab builds network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "helper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	helper := exec.Command(exe, "-test.run=^TestLabSIGKILLHelper$", "-test.count=1", "-test.v")
	helper.Env = append(os.Environ(), sigkillHelperEnv+"="+dir)
	helper.Stdout, helper.Stderr = logf, logf
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	pid := helper.Process.Pid
	var inside []int // the processes the lab started in its namespaces
	t.Cleanup(func() {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if removed, err := removeOwned(ctx, pid); len(removed) > 0 || err != nil {
			t.Logf("cleanup removed %v: %v", removed, err)
		}
		for _, p := range inside {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		for _, d := range ownedTempDirs(pid) {
			_ = os.RemoveAll(d)
		}
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("helper and reaper output:\n%s", out)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The capture starts after the namespaces and the servers.
	var names []string
	for {
		all, err := Namespaces(ctx)
		if err != nil {
			t.Fatal(err)
		}
		names = ownedBy(all, pid)
		if _, err := os.Stat(filepath.Join(dir, "lab.pcap")); err == nil && len(names) >= 4 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the lab did not start: namespaces %v", names)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, n := range names {
		inside = append(inside, ns{n}.pids(ctx)...)
	}
	tmp := ownedTempDirs(pid) // python3's files, sshd's key
	if len(inside) == 0 {
		t.Log("note: no server process in the namespaces (python3 and sshd not installed)")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	killed := time.Now()

	deadline := killed.Add(15 * time.Second)
	for {
		all, err := Namespaces(ctx)
		if err != nil {
			t.Fatal(err)
		}
		left := ownedBy(all, pid)
		var alive []int
		for _, p := range inside {
			if !procGone(p) {
				alive = append(alive, p)
			}
		}
		dirs := ownedTempDirs(pid)
		if len(left) == 0 && len(alive) == 0 && len(dirs) == 0 {
			t.Logf("namespaces %v, processes %v and directories %v gone %s after the SIGKILL", names, inside, tmp,
				time.Since(killed).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the lab's SIGKILL: namespaces %v, processes %v and directories %v left", left, alive, dirs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLabSIGKILLHelper is the lab process of TestLabSIGKILLLeavesNothing.
func TestLabSIGKILLHelper(t *testing.T) {
	dir := os.Getenv(sigkillHelperEnv)
	if dir == "" {
		t.Skip("helper process of TestLabSIGKILLLeavesNothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := Config{Duration: 90 * time.Second, Out: filepath.Join(dir, "lab.pcap"), Clients: 1,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	_, err := Run(ctx, cfg)
	t.Fatalf("the lab ended before its SIGKILL: %v", err)
}

// procGone: no process p, or only its zombie.
func procGone(p int) bool {
	if err := syscall.Kill(p, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && slices.Contains([]string{"Z", "X"}, strings.Fields(string(stat[i+1:]))[0])
}

// TestReaperSelection: the reaper of lab 123 takes that lab's namespaces
// only (not 12's, 1234's, 0123's, or names without a pid); Cleanup without force
// spares live labs, its own process's excepted.
func TestReaperSelection(t *testing.T) {
	names := []string{"vigil-lab-123-br", "vigil-lab-123-1", "vigil-lab-123-12", "vigil-lab-1234-br", "vigil-lab-12-3",
		"vigil-lab-x", "vigil-lab--123-1", "other-123-1", "vigil-lab-0123-1"}
	if got, want := ownedBy(names, 123), []string{"vigil-lab-123-br", "vigil-lab-123-1", "vigil-lab-123-12"}; !slices.Equal(got, want) {
		t.Errorf("ownedBy 123: %v, want %v", got, want)
	}
	if got := ownedBy(names, 12); !slices.Equal(got, []string{"vigil-lab-12-3"}) {
		t.Errorf("ownedBy 12: %v", got)
	}
	if got := ownedBy(names, 0); len(got) != 0 {
		t.Errorf("ownedBy 0: %v", got)
	}
	alive := func(p int) bool { return p == 1234 || p == 777 }
	labs := []string{"vigil-lab-123-br", "vigil-lab-1234-br", "vigil-lab-777-1", "vigil-lab-x"}
	if got, want := stale(labs, false, 777, alive), []string{"vigil-lab-123-br", "vigil-lab-777-1", "vigil-lab-x"}; !slices.Equal(got, want) {
		t.Errorf("stale: %v, want %v", got, want)
	}
	if got := stale(labs, true, 777, alive); !slices.Equal(got, labs) {
		t.Errorf("stale with force: %v", got)
	}
}

func TestParseStartTime(t *testing.T) {
	stat := "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000000 200\n"
	if got, err := parseStartTime(stat); err != nil || got != 987654 {
		t.Errorf("start time %d, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20"} {
		if _, err := parseStartTime(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, _, err := parseReaperArg("1:5"); err == nil {
		t.Error("reaper of pid 1 accepted")
	}
	if pid, start, err := parseReaperArg("4242:987654"); err != nil || pid != 4242 || start != 987654 {
		t.Errorf("parseReaperArg: %d %d %v", pid, start, err)
	}
	if _, err := procStartTime(os.Getpid()); err != nil {
		t.Error(err)
	}
}

// TestReaperReexec (no root): the reaper is this test binary run again
// (the package's init hook). Told the lab is done, it exits and removes
// nothing; when its pipe reads EOF, as when the lab process dies, it
// removes what this process's lab left: here a temporary directory.
func TestReaperReexec(t *testing.T) {
	dir, err := tempDir("reapertest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	var log strings.Builder
	r, err := startReaper(&log)
	if err != nil {
		t.Fatal(err)
	}
	if r.cmd.SysProcAttr == nil || !r.cmd.SysProcAttr.Setsid {
		t.Error("the reaper shares the lab's session")
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, log.String())
	}
	if _, err := os.Stat(dir); err != nil || log.Len() > 0 {
		t.Fatalf("reaper of a lab that tore down: %v\n%s", err, log.String())
	}

	log.Reset()
	r, err = startReaper(&log)
	if err != nil {
		t.Fatal(err)
	}
	r.ctl.Close() // EOF, as at the lab process's death
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("reaper: %v", err)
		}
	case <-time.After(reaperDeadline + 10*time.Second):
		_ = r.cmd.Process.Kill()
		t.Fatal("reaper did not exit")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s not removed: %v", dir, err)
	}
	if !strings.Contains(log.String(), "lab process gone") {
		t.Errorf("reaper log:\n%s", log.String())
	}
	t.Logf("reaper log:\n%s", log.String())
}
