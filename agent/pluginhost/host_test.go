package pluginhost

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{
		{0, 250 * time.Millisecond},
		{1, 500 * time.Millisecond},
		{3, 2 * time.Second},
		{7, 30 * time.Second},
		{1000, 30 * time.Second},
	} {
		if got := backoff(250*time.Millisecond, 30*time.Second, tc.failures); got != tc.want {
			t.Errorf("backoff(%d) = %s, want %s", tc.failures, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no path", func(c *Config) { c.Path = "" }, false},
		{"ring not power of two", func(c *Config) { c.RingSlots = 1000 }, false},
		{"batch larger than ring", func(c *Config) { c.RingSlots = 1024; c.MaxBatch = 2048 }, false},
		{"short checksum", func(c *Config) { c.Checksum = []byte{1, 2} }, false},
		{"backoff inverted", func(c *Config) { c.MinBackoff = time.Minute; c.MaxBackoff = time.Second }, false},
		{"delay too long", func(c *Config) { c.MaxDelay = time.Hour }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Path: "/bin/true"}
			c.setDefaults()
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestChecksumMismatch: a binary that does not match the pinned SHA-256 is
// never executed.
func TestChecksumMismatch(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "plugin")
	marker := filepath.Join(dir, "ran")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Path: bin, Checksum: make([]byte, 32), KeepPrivileges: true})
	if err != nil {
		t.Fatal(err)
	}
	err = h.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Start with wrong checksum: %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("binary with a wrong checksum was executed")
	}
	if _, err := New(Config{Path: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("New pinned a missing binary")
	}
}

// TestPinBeforeFirstLaunch: without Config.Checksum the binary is pinned
// once (Checksum, or the first launch); a binary swapped after the pin is
// refused by go-plugin's check and never runs.
func TestPinBeforeFirstLaunch(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "plugin")
	marker := filepath.Join(dir, "ran")
	orig := []byte("#!/bin/sh\nexit 1\n")
	if err := os.WriteFile(bin, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Path: bin, KeepPrivileges: true})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(orig)
	if got := h.Checksum(); !bytes.Equal(got, want[:]) {
		t.Fatalf("Checksum %x, want %x", got, want)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := h.Checksum(); !bytes.Equal(got, want[:]) {
		t.Fatalf("pin moved to the new binary: %x", got)
	}
	err = h.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Start of a swapped binary: %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("swapped binary was executed")
	}
	if _, err := New(Config{Path: dir}); err == nil {
		t.Fatal("New accepted a directory as the plugin binary")
	}
}

func TestStderrWriter(t *testing.T) {
	var out bytes.Buffer
	w := &stderrWriter{log: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	in := `{"@level":"warn","@message":"model load failed","@timestamp":"x","path":"/m"}` + "\n" +
		`{"@message":5,"@level":["x"]}` + "\n" + // go-plugin's own parser panics on this
		"plain line\n" + "panic: boom\n" + "goroutine 1\n" + strings.Repeat("A", 3*maxLogLine) + "\npartial"
	// Write in odd-sized pieces, as pipes deliver.
	for b := []byte(in); len(b) > 0; {
		n := min(len(b), 7)
		if _, err := w.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	got := out.String()
	for _, want := range []string{
		`level=WARN msg="model load failed" path=/m`,
		`level=INFO msg="plain line"`,
		`level=ERROR msg="panic: boom"`,
		`level=ERROR msg="goroutine 1"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "partial") {
		t.Error("an unterminated line was logged")
	}
	for _, line := range strings.Split(got, "\n") {
		if len(line) > maxLogLine+200 {
			t.Errorf("line of %d bytes not truncated", len(line))
		}
	}
}

func TestHCLogAdapter(t *testing.T) {
	var out bytes.Buffer
	a := newHCLog(slog.New(slog.NewTextHandler(&out, nil)), "vigil-detector-x")
	a.Info("starting plugin", "path", "/p")
	a.Debug("hidden")
	a.Named("vigil-detector-x").Error("must be dropped")
	a.Named("stdio").With("k", "v").Warn("kept")
	got := out.String()
	if !strings.Contains(got, "starting plugin") || !strings.Contains(got, "kept") || !strings.Contains(got, "k=v") {
		t.Errorf("missing lines:\n%s", got)
	}
	if strings.Contains(got, "hidden") || strings.Contains(got, "must be dropped") {
		t.Errorf("unexpected lines:\n%s", got)
	}
	if a.Named("vigil-detector-x").GetLevel() != hclog.Off {
		t.Error("stderr logger not switched off")
	}
}

// FuzzStderrWriter feeds arbitrary plugin stderr to the log forwarder.
func FuzzStderrWriter(f *testing.F) {
	f.Add([]byte(`{"@level":"info","@message":"x","k":[1,{"a":null}]}` + "\n"))
	f.Add([]byte(`{"@message":1}` + "\npanic: x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w := &stderrWriter{log: slog.New(slog.DiscardHandler)}
		if n, err := w.Write(b); n != len(b) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if len(w.buf) > maxLogLine {
			t.Fatalf("buffer grew to %d", len(w.buf))
		}
	})
}
