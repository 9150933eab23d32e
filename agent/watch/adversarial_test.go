package watch_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestAdversarialTree: link loops, a link to /, a 5 GiB sparse file, odd
// names, 100,000 empty files created while watching, a folder deleted while
// watched. No crash, bounded memory, clear counters. Expensive: VIGIL_E2E=1.
func TestAdversarialTree(t *testing.T) {
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("expensive (100,000 files): set VIGIL_E2E=1")
	}
	root := t.TempDir()
	os.Symlink(root, filepath.Join(root, "loop"))
	os.Symlink("/", filepath.Join(root, "slash"))
	os.Symlink("a", filepath.Join(root, "b"))
	os.Symlink("b", filepath.Join(root, "a"))
	// The sink keeps only the events the test inspects, so that the memory
	// measured is the watcher's, not the test's.
	w, s := startWatchKeep(t, watch.Config{Roots: []string{root}}, func(e *event.File) bool {
		return e.Path == filepath.Join(root, "marker") || e.Path == filepath.Join(root, "sparse.img")
	})

	sparse := filepath.Join(root, "sparse.img")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(5 << 30); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("tail"), 5<<30-4)
	f.Close()
	odd := filepath.Join(root, "line\nbreak\xff\xfe")
	os.WriteFile(odd, []byte("x"), 0o644)

	var peak uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse+ms.StackInuse)
			}
		}
	}()
	const dirs, per = 100, 1000
	t0 := time.Now()
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", d))
		os.Mkdir(dir, 0o755)
		for i := 0; i < per; i++ {
			fh, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%04d", i)))
			if err != nil {
				t.Fatal(err)
			}
			fh.Close()
		}
	}
	created := time.Since(t0)
	os.RemoveAll(filepath.Join(root, "d000"))
	os.WriteFile(filepath.Join(root, "marker"), []byte("m"), 0o644)
	evs := s.wait(t, "marker", hasPath(filepath.Join(root, "marker")))
	close(stop)
	<-done
	st := w.Stats()
	s.mu.Lock()
	creates, total := s.creat, s.n
	s.mu.Unlock()
	for _, e := range evs {
		if e.Path == sparse && e.SampleLen > 64<<10 {
			t.Fatalf("sparse file over-read: %+v", e)
		}
	}
	t.Logf("created %d files in %v; %d events, %d creates; peak heap+stack %.1f MB; stats %+v",
		dirs*per, created, total, creates, float64(peak)/(1<<20), st)
	if peak > 100<<20 {
		t.Errorf("peak memory %.1f MB", float64(peak)/(1<<20))
	}
	if creates < dirs*per*9/10 && st.Overflows == 0 && st.Dropped == 0 {
		t.Errorf("only %d creates and no overflow or drop counted", creates)
	}
	if st.SampleErrors != 0 || st.Errors != 0 {
		t.Errorf("errors: %+v", st)
	}
	if st.Watches != dirs { // root + 99 remaining dirs
		t.Errorf("watches %d, want %d", st.Watches, dirs)
	}
}
