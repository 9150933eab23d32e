package capture_test

// This external test pushes real odd captures through the whole capture,
// decode and feature path. It imports models/features/netflow in a test
// only; the capture package itself imports no model code.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/features/netflow"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func parsersDir(t *testing.T) string {
	dir := os.Getenv("VIGIL_SHARED_DATA")
	if dir == "" {
		dir = "/work/shared/data"
	}
	dir = filepath.Join(dir, "parsers")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Skipf("parsers corpus not found at %s (set VIGIL_SHARED_DATA): skipping", dir)
	}
	return dir
}

type fileResult struct {
	packets int
	err     error
	panic   string
}

// runFile reads one capture through decode and netflow/v1 features.
func runFile(ctx context.Context, path string) (res fileResult) {
	defer func() {
		if r := recover(); r != nil {
			res.panic = fmt.Sprintf("%v\n%s", r, debug.Stack())
		}
	}()
	s, err := capture.OpenFile(path)
	if err != nil {
		res.err = err
		return res
	}
	defer s.Close()
	ex := netflow.New(netflow.Config{MaxSockets: 4096, MaxChannels: 1024, MaxHosts: 1024})
	buf := make([]event.Packet, 256)
	out := make([]float32, netflow.Dim)
	for {
		n, err := s.Next(ctx, buf)
		for i := range buf[:n] {
			ex.Extract(&buf[i], out)
		}
		res.packets += n
		if err != nil {
			if err != io.EOF {
				res.err = err
			}
			return res
		}
	}
}

// TestParsersCorpus reads every capture of the shared parsers corpus (a
// sample unless VIGIL_E2E=1): no panic, no hang, clear errors.
func TestParsersCorpus(t *testing.T) {
	dir := parsersDir(t)
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	sort.Strings(files)
	if os.Getenv("VIGIL_E2E") != "1" {
		var sample []string
		for i := 0; i < len(files); i += 25 {
			sample = append(sample, files[i])
		}
		t.Logf("VIGIL_E2E unset: reading a sample of %d of %d files", len(sample), len(files))
		files = sample
	}
	const perFile = 60 * time.Second
	var ok, failed, unknownLink, notCapture, truncated, corrupt, packets int
	for _, f := range files {
		ctx, cancel := context.WithTimeout(context.Background(), perFile)
		done := make(chan fileResult, 1)
		go func() { done <- runFile(ctx, f) }()
		var r fileResult
		select {
		case r = <-done:
		case <-time.After(perFile + 10*time.Second):
			cancel()
			t.Fatalf("%s: hung for more than %v", f, perFile)
		}
		cancel()
		rel, _ := filepath.Rel(dir, f)
		switch {
		case r.panic != "":
			t.Errorf("%s: panic: %s", rel, r.panic)
		case errors.Is(r.err, context.DeadlineExceeded):
			t.Errorf("%s: not read within %v", rel, perFile)
		case r.err == nil:
			ok++
		case errors.Is(r.err, capture.ErrUnsupportedLinkType):
			unknownLink++
		case errors.Is(r.err, capture.ErrUnknownFormat):
			notCapture++
		case errors.Is(r.err, capture.ErrTruncated):
			truncated++
			t.Logf("%s: %v (%d packets delivered)", rel, r.err, r.packets)
		case errors.Is(r.err, capture.ErrCorrupt):
			corrupt++
			t.Logf("%s: %v (%d packets delivered)", rel, r.err, r.packets)
		default:
			failed++
			t.Errorf("%s: unclassified error: %v", rel, r.err)
		}
		packets += r.packets
	}
	t.Logf("files %d: ok %d, unsupported link type %d, not a capture %d, truncated %d, corrupt %d, other errors %d; %d packets through netflow/v1",
		len(files), ok, unknownLink, notCapture, truncated, corrupt, failed, packets)
}
