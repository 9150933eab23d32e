package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The reaper removes what a lab leaves when its process dies without
// tearing down: SIGKILL, the OOM killer, a panic in a goroutine. Run starts
// it before it creates a namespace: a re-execution of the running binary
// (/proc/self/exe: the file may be gone, as a go test binary is, or
// replaced) with reaperEnv set, in a session of its own (a SIGKILL of the
// lab's process group or a terminal's ^C does not reach it). It holds the
// read end of a pipe whose write end only the lab process holds (close on
// exec: no child inherits it). When Run ends it writes reaperDone and the
// reaper exits; when the lab process dies the pipe reads EOF, and the
// reaper removes the namespaces of that pid and nothing else, killing what
// still runs inside, and the lab's temporary directories, within
// reaperDeadline.
//
// The hook is this package's init, so every binary that can call Run (the
// vigil-lab command, test binaries of this package and of those importing
// it) can be its reaper; no TestMain is needed.

// reaperEnv is set, to "<lab pid>:<lab start time>", in the reaper's
// environment only.
const reaperEnv = "VIGIL_LAB_REAPER"

const (
	reaperReady = 'r' // reaper to lab: waiting on the pipe
	reaperDone  = 'd' // lab to reaper: torn down, exit
)

// reaperDeadline bounds the reaper's removal after the lab's death.
const reaperDeadline = time.Minute

func init() {
	if v, ok := os.LookupEnv(reaperEnv); ok {
		os.Exit(reap(v))
	}
}

// reaper is the lab's side of a running reaper.
type reaper struct {
	cmd *exec.Cmd
	ctl *os.File // the pipe's write end
}

// startReaper starts the reaper of this process; it logs to stderr.
func startReaper(stderr io.Writer) (_ *reaper, err error) {
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	defer ctlR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		ctlW.Close()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	defer readyR.Close()
	defer readyW.Close()
	env := []string{fmt.Sprintf("%s=%d:%d", reaperEnv, os.Getpid(), start)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, reaperEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"vigil-lab-reaper"},
		Env:         env,
		Stderr:      stderr,
		ExtraFiles:  []*os.File{ctlR, readyW}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		ctlW.Close()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	ctlR.Close()
	readyW.Close()
	var b [1]byte
	_ = readyR.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := readyR.Read(b[:]); n != 1 || b[0] != reaperReady {
		_ = cmd.Process.Kill()
		werr := cmd.Wait()
		ctlW.Close()
		return nil, fmt.Errorf("start reaper: not ready: %w", errors.Join(err, werr))
	}
	return &reaper{cmd: cmd, ctl: ctlW}, nil
}

// stop tells the reaper that the lab tore down and waits (10 s at most)
// for its exit.
func (r *reaper) stop() error {
	_, werr := r.ctl.Write([]byte{reaperDone})
	r.ctl.Close()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		return errors.Join(werr, err)
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		return errors.Join(werr, <-done, errors.New("stop reaper: no exit in 10 s"))
	}
}

// reap is the reaper process: arg is reaperEnv's value, the pipe is fd 3,
// the ready pipe fd 4. It returns the exit code.
func reap(arg string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("reaper", os.Getpid())
	pid, start, err := parseReaperArg(arg)
	if err != nil {
		log.Error("lab reaper", "err", err)
		return 2
	}
	log = log.With("lab_pid", pid)
	ctl, ready := os.NewFile(3, "lab pipe"), os.NewFile(4, "ready pipe")
	if ctl == nil || ready == nil {
		log.Error("lab reaper: no pipe from the lab")
		return 2
	}
	if _, err := ready.Write([]byte{reaperReady}); err != nil {
		log.Error("lab reaper: tell the lab", "err", err)
		return 2
	}
	ready.Close()
	var b [1]byte
	n, _ := ctl.Read(b[:]) // until the lab is done or gone
	ctl.Close()
	if n == 1 && b[0] == reaperDone {
		return 0
	}
	log.Warn("lab process gone without tearing down: removing its namespaces")
	ctx, cancel := context.WithTimeout(context.Background(), reaperDeadline)
	defer cancel()
	// A second pass: an ip command the lab started just before it died may
	// still create a namespace.
	for i, wait := range []time.Duration{0, 2 * time.Second} {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		if reused(pid, start) {
			log.Error("lab pid taken by another process: its namespaces are left to `vigil-lab --cleanup`")
			return 1
		}
		removed, err := removeOwned(ctx, pid)
		for _, n := range removed {
			log.Info("removed lab namespace", "name", n)
		}
		if err != nil {
			log.Warn("remove lab namespaces", "err", err)
		}
		if i > 0 {
			continue
		}
		for _, d := range ownedTempDirs(pid) {
			if err := os.RemoveAll(d); err != nil {
				log.Warn("remove lab directory", "err", err)
			} else {
				log.Info("removed lab directory", "dir", d)
			}
		}
	}
	names, err := Namespaces(ctx)
	if left := ownedBy(names, pid); err != nil || len(left) > 0 {
		log.Error("lab namespaces left: run `vigil-lab --cleanup`", "names", left, "err", err)
		return 1
	}
	return 0
}

func parseReaperArg(arg string) (pid int, start uint64, err error) {
	p, s, ok := strings.Cut(arg, ":")
	pid, perr := strconv.Atoi(p)
	start, serr := strconv.ParseUint(s, 10, 64)
	if !ok || perr != nil || serr != nil || pid <= 1 {
		return 0, 0, fmt.Errorf("%s=%q: want <pid>:<start time>", reaperEnv, arg)
	}
	return pid, start, nil
}

// procStartTime is a process's start time (clock ticks after boot, field
// 22 of /proc/<pid>/stat): with the pid it names one process for good.
func procStartTime(pid int) (uint64, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	return parseStartTime(string(stat))
}

func parseStartTime(stat string) (uint64, error) {
	// The command name (field 2) is in parentheses and may hold anything.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("read process start time: no command name")
	}
	f := strings.Fields(stat[i+1:]) // from field 3
	if len(f) < 20 {
		return 0, errors.New("read process start time: short stat")
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	return t, nil
}

// reused: pid is now another process than the lab that started at start
// (a pid that is free, or still the lab's zombie, is not).
func reused(pid int, start uint64) bool {
	t, err := procStartTime(pid)
	return err == nil && t != start
}

// tempDir creates a temporary directory named after this lab process, so
// that its reaper finds it.
func tempDir(kind string) (string, error) {
	return os.MkdirTemp("", fmt.Sprintf("%s%d-%s-", Prefix, os.Getpid(), kind))
}

// ownedTempDirs lists the temporary directories of the lab process pid.
func ownedTempDirs(pid int) []string {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-*", Prefix, pid)))
	return dirs
}
