//go:build unix

package update

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRefusesFIFO: a named pipe where the updater expects one of its files (a pointer, a
// version floor, a replay state, the state lock, a download, a bundle to install or to stage
// for a plugin) is refused at once. Opening a FIFO waits for the other end, so every one of
// these opens held the agent's start, its updates or `vigil-agent update` for good; the state
// directory belongs to the agent's service user.
func TestRefusesFIFO(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name string
		fifo func(e *env) string // where the FIFO goes (its directory exists)
		call func(e *env, u *Updater, fifo string) error
	}{
		{"pointer", func(e *env) string { return filepath.Join(e.t.TempDir(), activePrefix+"netflow-v1") },
			func(e *env, u *Updater, fifo string) error {
				_, err := readPointer(filepath.Dir(fifo), filepath.Base(fifo))
				return err
			}},
		{"version floor", func(e *env) string { return filepath.Join(e.t.TempDir(), floorPrefix+"netflow-v1") },
			func(e *env, u *Updater, fifo string) error {
				_, err := readFloor(filepath.Dir(fifo), "netflow-v1")
				return err
			}},
		{"replay state", func(e *env) string { return replayFile(e.t.TempDir(), "nethost/v1") },
			func(e *env, u *Updater, fifo string) error {
				_, err := readReplay(filepath.Dir(fifo), "nethost/v1")
				return err
			}},
		{"file digest", func(e *env) string { return filepath.Join(e.t.TempDir(), "x.vgb") },
			func(e *env, u *Updater, fifo string) error { _, err := FileDigest(fifo); return err }},
		{"bundle to install", func(e *env) string { return filepath.Join(e.t.TempDir(), "x.vgb") },
			func(e *env, u *Updater, fifo string) error {
				_, err := u.Install(context.Background(), Request{Path: fifo})
				var rej *Rejection
				if err != nil && !errors.As(err, &rej) {
					return errors.New("not a Rejection: " + err.Error())
				}
				return err
			}},
		{"bundle staged for a plugin", func(e *env) string { return filepath.Join(e.t.TempDir(), "x.vgb") },
			func(e *env, u *Updater, fifo string) error {
				_, err := StageForPlugin(e.t.TempDir(), fifo, "")
				return err
			}},
		{"state lock", func(e *env) string {
			dir := filepath.Join(e.state, ModelsDir)
			if err := os.MkdirAll(dir, 0o750); err != nil {
				e.t.Fatal(err)
			}
			return filepath.Join(dir, lockFile)
		}, func(e *env, u *Updater, fifo string) error {
			unlock, err := u.lockState(context.Background())
			if err == nil {
				unlock()
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			u := e.updater(nil)
			fifo := tc.fifo(e)
			fsutiltest.Mkfifo(t, fifo)
			err := fsutiltest.ReturnsWithin(t, fifo, func() error { return tc.call(e, u, fifo) })
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("FIFO %s: got %v, want a not-a-regular-file error", filepath.Base(fifo), err)
			}
		})
	}
}

// failFetcher fails every fetch (the download test must not get that far).
type failFetcher struct{}

func (failFetcher) Fetch(context.Context, string, uint64, uint64, io.Writer) (uint64, error) {
	return 0, ErrNotFound
}

// TestPartialDownloadNotRegularReplaced: a `.part` that is a named pipe or a
// symbolic link is not the updater's. Opening it waited for a reader (a
// FIFO) or wrote through the link; refusing it instead rejected that offer
// for good, as nothing cleans the download directory. It is removed (never
// what a link names) and the download starts afresh.
func TestPartialDownloadNotRegularReplaced(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, kind := range []string{"fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t)
			u := e.updater(nil)
			u.cfg.Fetcher = failFetcher{}
			dir := filepath.Join(e.state, DownloadDir)
			if err := os.MkdirAll(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			part := filepath.Join(dir, strings.TrimPrefix(digest, "sha256:")+".part")
			target := filepath.Join(t.TempDir(), "elsewhere")
			if kind == "fifo" {
				fsutiltest.Mkfifo(t, part)
			} else {
				if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, part); err != nil {
					t.Fatal(err)
				}
			}
			err := fsutiltest.ReturnsWithin(t, part, func() error {
				_, err := u.download(context.Background(), &wirev1.ModelOffer{Model: &wirev1.ModelRef{Digest: digest}, Size: 10})
				return err
			})
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("download: %v, want the fetcher's error (the download restarted)", err)
			}
			if fi, err := os.Lstat(part); err == nil && !fi.Mode().IsRegular() {
				t.Fatalf("%s still a %v", filepath.Base(part), fi.Mode().Type())
			}
			if kind == "symlink" {
				if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
					t.Fatalf("the link's target changed: %q %v", b, err)
				}
			}
		})
	}
}
