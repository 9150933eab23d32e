// Package fsutiltest helps the tests of code that must refuse a named pipe
// (FIFO) where it expects a regular file, instead of waiting on it.
package fsutiltest

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// Bound is how long ReturnsWithin waits: far above any machine's time for
// an open and an fstat. A passing test never waits for it; it only decides
// how soon a regression fails.
const Bound = 10 * time.Second

// Mkfifo makes a named pipe at path, or skips the test where the file
// system has none.
func Mkfifo(t testing.TB, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo %s: %v", path, err)
	}
}

// ReturnsWithin runs call and returns its error. If call has not returned
// within Bound, the test fails: the FIFO at fifo is then opened for reading
// and writing (at once, with O_NONBLOCK), which ends an open blocked on
// either of its ends, so that a regression fails the test instead of
// hanging the suite.
func ReturnsWithin(t testing.TB, fifo string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(Bound):
		if f, err := os.OpenFile(fifo, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		<-done
		t.Fatalf("blocked on the FIFO %s for %s instead of refusing it", fifo, Bound)
		return nil
	}
}
