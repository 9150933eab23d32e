package watch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestRenameHalfWaitsForQueuedNewHalf: the loop can be held up for longer
// than RenameWindow between a rename's two halves (a flush waiting for room
// in the sampler's queue, a rescan, the walk of a new directory) while the
// new half already waits in fsnotify's channel. The old half must not be
// reported as moved out of the tree, then paired again: one rename, once.
func TestRenameHalfWaitsForQueuedNewHalf(t *testing.T) {
	root := t.TempDir()
	a := filepath.Join(root, "a.doc")
	write(t, a, []byte("plain words\n"))
	w, err := New(fastCfg(root), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.closeRoots()
	defer w.fsw.Close()
	b := a + ".locked"
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	next := func() fsnotify.Event {
		t.Helper()
		select {
		case ev := <-w.fsw.Events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		panic("unreachable")
	}
	ev := next()
	if ev.Name != a || !ev.Has(fsnotify.Rename) {
		t.Fatalf("first event %v, want the rename of %s", ev, a)
	}
	w.handle(ev)
	time.Sleep(2 * w.cfg.RenameWindow) // the loop is busy elsewhere
	w.flush(false)                     // then a tick comes first
	w.handle(next())                   // the new half, queued all along
	w.flush(true)
	var got []event.File
	for len(w.work) > 0 {
		it := <-w.work
		got = append(got, it.ev)
	}
	if len(got) != 1 || got[0].Op != event.FileRename || got[0].Path != b || got[0].OldPath != a {
		t.Fatalf("events:\n%s want one rename %s <- %s", dump(got), b, a)
	}
	if s := w.Stats(); s.RenamesUnpaired != 0 || s.RenamesPaired != 1 {
		t.Fatalf("paired %d, unpaired %d; want 1, 0", s.RenamesPaired, s.RenamesUnpaired)
	}
}

// TestRenameChainsKeepFirstName: a file renamed twice within the debounce
// window is one rename from its first name (a -> b -> c is c <- a: a's
// disappearance is reported, and ext_changed compares a with c), and a move
// onto a name whose create or rename is still waiting reports both.
func TestRenameChainsKeepFirstName(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.Debounce, cfg.RenameWindow = 500*time.Millisecond, 500*time.Millisecond
	_, c := start(t, cfg)
	renamedFrom := func(p, old string) func([]event.File) bool {
		return func(evs []event.File) bool {
			for _, e := range evs {
				if e.Op == event.FileRename && e.Path == p && e.OldPath == old {
					return true
				}
			}
			return false
		}
	}

	// a.docx -> x.locked -> a.docx.locked within one window.
	a := filepath.Join(root, "a.docx")
	write(t, a, []byte("report\n"))
	c.waitFor(t, "a.docx", has(event.FileCreate, a))
	mid := filepath.Join(root, "x.locked")
	fin := a + ".locked"
	if err := os.Rename(a, mid); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(mid, fin); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "rename chain reported from its first name", renamedFrom(fin, a))

	// y moved onto b, created just before: both the create of b and the
	// move of y are reported.
	y := filepath.Join(root, "y.txt")
	write(t, y, []byte("y\n"))
	c.waitFor(t, "y.txt", has(event.FileCreate, y))
	b := filepath.Join(root, "b.txt")
	write(t, b, []byte("b\n"))
	if err := os.Rename(y, b); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "move onto a waiting create", func(evs []event.File) bool {
		return has(event.FileCreate, b)(evs) && renamedFrom(b, y)(evs)
	})
}

// TestRenameFromTooLongPath: a file moved from a name longer than
// event.MaxPathLen (deeper than PATH_MAX, reachable with *at calls) to a
// short one. Its old name cannot be encoded: an event carrying it fails the
// encoding of the whole batch it travels in, so every event of that Score
// call would be lost.
func TestRenameFromTooLongPath(t *testing.T) {
	root := t.TempDir()
	deep := root
	for len(deep) < event.MaxPathLen-250 {
		deep = filepath.Join(deep, strings.Repeat("d", min(200, event.MaxPathLen-250-len(deep))))
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	_, c := start(t, fastCfg(root))
	dfd, err := unix.Open(deep, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	name := strings.Repeat("n", 250)
	fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte("deep\n"))
	unix.Close(fd)
	if len(deep)+1+len(name) <= event.MaxPathLen {
		t.Fatalf("old name only %d bytes", len(deep)+1+len(name))
	}
	short := filepath.Join(root, "short.txt")
	if err := unix.Renameat(dfd, name, rfd, "short.txt"); err != nil {
		t.Fatal(err)
	}
	evs := c.waitFor(t, "event for the new name", func(evs []event.File) bool {
		for _, e := range evs {
			if e.Path == short {
				return true
			}
		}
		return false
	})
	if _, err := event.MarshalFiles(nil, evs); err != nil {
		t.Fatalf("the watcher's events do not encode: %v\n%s", err, dump(evs))
	}
}
