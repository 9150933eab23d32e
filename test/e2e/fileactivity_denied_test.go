package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Permission-denied folders and files, for real: root reads a 000-mode
// folder anyway, so as root the test re-executes itself (the watcher side)
// and `vigil-agent scan --dir` as nobody (65534:65534); run unprivileged it
// does both directly.

const faDeniedEnv = "VIGIL_FA_DENIED" // the tree's root, in the re-executed watcher helper

// unprivUID is the uid the privileged test drops to.
const unprivUID = 65534

// deniedReport is what the watcher helper prints (JSON on its last line).
type deniedReport struct {
	UID    int
	Stats  watch.Stats
	Events []deniedEvent
	Err    string
}

type deniedEvent struct {
	Path      string
	Op        string
	Flags     uint16
	SampleLen uint32
}

// TestFileactivityDeniedHelper is not a test: re-executed (as nobody when
// the test runs as root) by TestFileactivityPermissionDenied, it watches the
// tree, makes changes an unprivileged user can make, and prints a report.
func TestFileactivityDeniedHelper(t *testing.T) {
	root := os.Getenv(faDeniedEnv)
	if root == "" {
		t.Skip("helper process of TestFileactivityPermissionDenied")
	}
	rep := watchDeniedTree(root)
	b, _ := json.Marshal(rep)
	fmt.Printf("\nDENIED-REPORT %s\n", b)
}

// watchDeniedTree runs the watcher over root as the current user: it
// creates a readable file, one it then makes unreadable (0), a new folder
// with a file, and waits until those are reported (at most 30 s).
func watchDeniedTree(root string) deniedReport {
	rep := deniedReport{UID: os.Getuid()}
	w, err := watch.New(watch.Config{Roots: []string{root}, Debounce: 50 * time.Millisecond,
		RenameWindow: 50 * time.Millisecond, BatchDelay: 20 * time.Millisecond}, nil)
	if err != nil {
		rep.Err = err.Error()
		return rep
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []event.File, 64)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	var mu sync.Mutex
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for b := range out {
			mu.Lock()
			for _, e := range b {
				rep.Events = append(rep.Events, deniedEvent{Path: e.Path, Op: e.Op.String(), Flags: e.Flags, SampleLen: e.SampleLen})
			}
			mu.Unlock()
		}
	}()
	ok := filepath.Join(root, "ok")
	steps := []error{
		os.WriteFile(filepath.Join(ok, "new.txt"), []byte("a new readable file\n"), 0o644),
		os.WriteFile(filepath.Join(ok, "sub", "new2.txt"), []byte("another one\n"), 0o644),
		os.WriteFile(filepath.Join(ok, "later-locked.txt"), []byte("soon unreadable\n"), 0o644),
		os.Chmod(filepath.Join(ok, "later-locked.txt"), 0),
		os.Mkdir(filepath.Join(ok, "newdir"), 0o755),
	}
	time.Sleep(200 * time.Millisecond) // the new folder is watched before its file appears
	steps = append(steps, os.WriteFile(filepath.Join(ok, "newdir", "x.txt"), []byte("in a new folder\n"), 0o644))
	for _, err := range steps {
		if err != nil && rep.Err == "" {
			rep.Err = err.Error()
		}
	}
	want := []string{"ok/new.txt", "ok/sub/new2.txt", "ok/later-locked.txt", "ok/newdir/x.txt"}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		seen := 0
		for _, wp := range want {
			for _, e := range rep.Events {
				if e.Path == filepath.Join(root, wp) && (e.Flags&(event.FileFlagSampled|event.FileFlagDenied) != 0) {
					seen++
					break
				}
			}
		}
		mu.Unlock()
		if seen == len(want) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && rep.Err == "" {
		rep.Err = err.Error()
	}
	<-collected
	rep.Stats = w.Stats()
	return rep
}

// readableTempDir is a temporary directory that nobody can traverse.
func readableTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vigil-fa-denied-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = filepath.WalkDir(d, func(p string, de os.DirEntry, err error) error {
			_ = os.Chmod(p, 0o755)
			return nil
		})
		_ = os.RemoveAll(d)
	})
	return d
}

// TestFileactivityPermissionDenied: a tree with a 000 folder (holding files
// and a subfolder) and a 000 file, read by an unprivileged user. The watcher
// does not crash, counts the unreadable folder and file in Stats.Denied,
// never reports anything inside the locked folder, flags the unreadable file
// FileFlagDenied, and watches and samples everything else, including what is
// created later. `vigil-agent scan --dir` scores the readable files and
// reports the unreadable ones in summary.denied.
func TestFileactivityPermissionDenied(t *testing.T) {
	privileged := os.Geteuid() == 0
	if !privileged {
		t.Log("not root: the test user is unprivileged already; running the watcher and scan --dir as it directly")
	}
	base := readableTempDir(t)
	root := filepath.Join(base, "tree")
	ok, locked := filepath.Join(root, "ok"), filepath.Join(root, "locked")
	for _, d := range []string{filepath.Join(ok, "sub"), filepath.Join(locked, "inner")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]os.FileMode{
		"ok/a.txt": 0o644, "ok/run.sh": 0o755, "ok/sub/b.txt": 0o644, "ok/secret.bin": 0,
		"locked/secret.txt": 0o644, "locked/inner/c.txt": 0o644,
	}
	for rel, mode := range files {
		p := filepath.Join(root, rel)
		if err := os.WriteFile(p, []byte("content of "+rel+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	if privileged {
		// The unprivileged user owns the tree (so it can add files to ok/);
		// mode 000 still locks it out of locked/ and secret.bin.
		err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, unprivUID, unprivUID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}

	// scan --dir first (on the tree as set up).
	if os.Getenv("VIGIL_E2E") == "1" {
		in := fileactivityInstall(t)
		cmd := exec.Command(in.Agent, "scan", "--json", "--dir", root)
		cmd.Env = append(os.Environ(), "ONNXRUNTIME_LIB="+in.Inst.ORTLib)
		cmd.Dir = base
		if privileged {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivUID, Gid: unprivUID}}
			cmd.Env = append(cmd.Env, "HOME="+base, "TMPDIR=/tmp")
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("scan --dir as uid %d: %v\nstderr:\n%s", unprivUIDOrSelf(privileged), err, stderr.String())
		}
		var res struct {
			Summary struct {
				Files   uint64 `json:"files"`
				Skipped uint64 `json:"skipped"`
				Denied  uint64 `json:"denied"`
				Lost    uint64 `json:"events_lost"`
			} `json:"summary"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatalf("scan --json: %v\n%s", err, stdout.String())
		}
		t.Logf("scan --dir as uid %d: %+v", unprivUIDOrSelf(privileged), res.Summary)
		// ok/a.txt, ok/run.sh, ok/sub/b.txt read and scored; ok/secret.bin
		// listed but unreadable (scored without content); locked/ unreadable.
		if res.Summary.Files != 4 || res.Summary.Denied != 2 || res.Summary.Skipped != 2 || res.Summary.Lost != 0 {
			t.Errorf("scan --dir summary %+v, want 4 files, 2 denied (locked/, ok/secret.bin), 2 skipped, 0 lost", res.Summary)
		}
	} else {
		t.Log("scan --dir part skipped: it starts real binaries (set VIGIL_E2E=1)")
	}

	// The watcher, as the unprivileged user.
	var rep deniedReport
	if privileged {
		// The test binary may sit in a private build directory: run a copy
		// nobody can execute.
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(base, "e2e-helper.test")
		if err := copyFile(self, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^TestFileactivityDeniedHelper$", "-test.v")
		cmd.Env = append(os.Environ(), faDeniedEnv+"="+root, "HOME="+base)
		cmd.Dir = base
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivUID, Gid: unprivUID}, Pdeathsig: syscall.SIGKILL}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("watcher helper as uid %d crashed or failed: %v\nstdout:\n%s\nstderr:\n%s", unprivUID, err, stdout.String(), stderr.String())
		}
		i := strings.LastIndex(stdout.String(), "DENIED-REPORT ")
		if i < 0 {
			t.Fatalf("no report from the helper:\n%s\n%s", stdout.String(), stderr.String())
		}
		line := stdout.String()[i+len("DENIED-REPORT "):]
		line = line[:strings.IndexByte(line+"\n", '\n')]
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatalf("helper report: %v\n%s", err, line)
		}
		if rep.UID != unprivUID {
			t.Fatalf("helper ran as uid %d, want %d", rep.UID, unprivUID)
		}
	} else {
		rep = watchDeniedTree(root)
	}
	st := rep.Stats
	t.Logf("watcher as uid %d: %d events; denied %d, watches %d, sample errors %d, watch errors %d, errors %d",
		rep.UID, len(rep.Events), st.Denied, st.Watches, st.SampleErrors, st.WatchErrors, st.Errors)
	if rep.Err != "" {
		t.Fatalf("helper: %s", rep.Err)
	}
	find := func(rel string) *deniedEvent {
		var last *deniedEvent
		for i := range rep.Events {
			if rep.Events[i].Path == filepath.Join(root, rel) {
				last = &rep.Events[i]
			}
		}
		return last
	}
	for _, rel := range []string{"ok/new.txt", "ok/sub/new2.txt", "ok/newdir/x.txt"} {
		if e := find(rel); e == nil || e.Flags&event.FileFlagSampled == 0 || e.SampleLen == 0 {
			t.Errorf("%s: not reported with content: %+v", rel, e)
		}
	}
	if e := find("ok/later-locked.txt"); e == nil || e.Flags&event.FileFlagDenied == 0 || e.Flags&event.FileFlagSampled != 0 {
		t.Errorf("ok/later-locked.txt (mode 0): want a FileFlagDenied event without content, got %+v", e)
	}
	for _, e := range rep.Events {
		if strings.HasPrefix(e.Path, locked+"/") {
			t.Errorf("event inside the unreadable folder: %+v", e)
		}
	}
	// Denied: locked/ (not watchable at the start) and later-locked.txt.
	if st.Denied < 2 {
		t.Errorf("Stats.Denied = %d, want >= 2 (the 000 folder and the 000 file)", st.Denied)
	}
	// Watched: tree, ok, ok/sub, ok/newdir; not locked/ nor locked/inner.
	if st.Watches != 4 {
		t.Errorf("watches %d, want 4 (everything but the unreadable folder)", st.Watches)
	}
	if st.SampleErrors != 0 || st.WatchErrors != 0 || st.Errors != 0 {
		t.Errorf("errors counted: %+v", st)
	}
}

func unprivUIDOrSelf(privileged bool) int {
	if privileged {
		return unprivUID
	}
	return os.Getuid()
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
