//go:build unix

package fsutil

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	content := []byte("0123456789")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("f", link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	if l, err := net.Listen("unix", sock); err == nil {
		defer l.Close()
	} else {
		sock = ""
	}
	linkToFIFO := filepath.Join(dir, "link-fifo")
	if err := os.Symlink("fifo", linkToFIFO); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		path     string
		max      int64
		noFollow bool
		want     []byte
		wantErr  error
	}{
		{"regular", file, 100, false, content, nil},
		{"regular at the limit", file, int64(len(content)), true, content, nil},
		{"over the limit", file, int64(len(content)) - 1, false, nil, ErrTooLarge},
		{"empty limit", file, 0, false, nil, ErrTooLarge},
		{"link followed", link, 100, false, content, nil},
		{"link refused", link, 100, true, nil, ErrNotRegular},
		{"fifo", fifo, 100, false, nil, ErrNotRegular},
		{"fifo no follow", fifo, 100, true, nil, ErrNotRegular},
		{"link to a fifo", linkToFIFO, 100, false, nil, ErrNotRegular},
		{"directory", dir, 100, false, nil, ErrNotRegular},
		{"character device", os.DevNull, 100, false, nil, ErrNotRegular},
		{"socket (open refused by the kernel)", sock, 100, false, nil, syscall.ENXIO},
		{"missing", filepath.Join(dir, "none"), 100, false, nil, fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == "" {
				t.Skip("no unix socket here")
			}
			read := ReadRegular
			if tc.noFollow {
				read = ReadRegularNoFollow
			}
			got, err := returnsWithin(t, tc.path, func() ([]byte, error) { return read(tc.path, tc.max) })
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %q, %v; want an error wrapping %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// returnsWithin runs read. If it has not returned after a bound far above
// any machine's time for an open and an fstat, the test fails; path is then
// opened for writing (O_NONBLOCK: at once, or not at all), which ends a
// read blocked on a FIFO, so that a regression fails instead of hanging.
func returnsWithin(t *testing.T, path string, read func() ([]byte, error)) ([]byte, error) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := read()
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(10 * time.Second):
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("the read blocked instead of refusing a special file")
		return nil, nil
	}
}
