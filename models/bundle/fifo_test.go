//go:build unix

package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReadRefusesFIFO: a named pipe where a bundle is expected is refused at once. Opening a FIFO
// for reading waits for a writer, so a Read that opened first and checked the file type after
// waited forever (a FIFO named *.vgb in a model directory hung the agent's bundle discovery).
func TestReadRefusesFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m-1"+Extension)
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Read(path, DefaultLimits())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("FIFO: got %v, want an error wrapping ErrInvalid", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the reader (a writer's open completes its open; closing gives it EOF).
		if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("Read blocked on a FIFO instead of refusing it")
	}
}
