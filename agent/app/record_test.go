package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestRecord records a folder in which files keep appearing until the
// recorder stops at --max-events, then reads the trace back.
func TestRecord(t *testing.T) {
	dir, outDir := t.TempDir(), t.TempDir()
	out := filepath.Join(outDir, "site.vft.gz")
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(context.Background(), []string{"record", "--dir", dir, "--out", out, "--max-events", "3", "--duration", "2m", "--json", "--log-level", "warn"}, &stdout, &stderr)
	}()
	random := make([]byte, 8192)
	_, _ = rand.Read(random)
	text := []byte(strings.Repeat("an ordinary line of a report\n", 200))
	code := -1
	for i := 0; i < 1200 && code < 0; i++ { // at most 60 s
		content := text
		if i%2 == 1 {
			content = random
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), content, 0o644); err != nil {
			t.Fatal(err)
		}
		select {
		case code = <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if code != 0 {
		t.Fatalf("record: exit %d: %s", code, stderr.String())
	}
	var rep RecordReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if rep.Events != 3 || rep.Stopped != "max-events" || rep.Out != out {
		t.Errorf("report %+v", rep)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("trace file: %v, mode %v", err, st.Mode())
	}
	f, _ := os.Open(out)
	defer f.Close()
	evs, err := event.ReadTrace(f, 0)
	if err != nil || len(evs) != 3 {
		t.Fatalf("trace: %d events, %v", len(evs), err)
	}
	for _, ev := range evs {
		var i int
		if _, err := fmt.Sscanf(filepath.Base(ev.Path), "f%04d", &i); err != nil || filepath.Dir(ev.Path) != dir {
			t.Fatalf("event path %q", ev.Path)
		}
		if ev.Op != event.FileCreate && ev.Op != event.FileWrite || ev.Flags&event.FileFlagSampled == 0 {
			t.Errorf("%s: op %v flags %#x", ev.Path, ev.Op, ev.Flags)
		}
		if random := i%2 == 1; random != (ev.Entropy > 7.5) || ev.SampleLen == 0 {
			t.Errorf("%s: entropy %.2f over %d bytes (random content: %v)", ev.Path, ev.Entropy, ev.SampleLen, random)
		}
	}
}

// TestRecordStops: a signal (the context) ends an idle recording with a
// valid, empty trace; bad flags are refused before anything is written.
func TestRecordStops(t *testing.T) {
	dir, outDir := t.TempDir(), t.TempDir()
	out := filepath.Join(outDir, "idle.vft")
	// An existing, world-readable file: the trace replaces it 0600.
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := Main(ctx, []string{"record", "--dir", dir, "--out", out, "--duration", "0", "--log-level", "warn"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "recorded 0 file events") || !strings.Contains(stdout.String(), "stopped by signal") {
		t.Errorf("summary %q", stdout.String())
	}
	if st, err := os.Stat(out); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("trace file mode %v, want 0600", st.Mode().Perm())
	}
	f, _ := os.Open(out)
	defer f.Close()
	if evs, err := event.ReadTrace(f, 0); err != nil || len(evs) != 0 {
		t.Errorf("idle trace: %d events, %v", len(evs), err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"record", "--out", out}, "--dir and --out are required"},
		{[]string{"record", "--dir", dir}, "--dir and --out are required"},
		{[]string{"record", "--dir", dir, "--out", filepath.Join(dir, "sub", "t.vft")}, "inside the watched folder"},
		{[]string{"record", "--dir", dir, "--out", out, "--duration", "-1s"}, "must not be negative"},
		{[]string{"record", "--dir", filepath.Join(dir, "missing"), "--out", out}, "record:"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := Main(context.Background(), tc.args, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr.String(), tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("a refused recording created something in the watched folder: %v", err)
	}
}
