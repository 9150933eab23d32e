//go:build unix

package detect

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/fsutil/fsutiltest"
)

// TestRefusesFIFO: a named pipe where the pipeline reads a file at start
// (its calibration file in the state directory, a bundle it stages for the
// plugin) is refused at once: opening a FIFO for reading waits for a writer,
// and the pipeline's start, the agent's with it, waited for good. The
// calibration file is then only unreadable (logged; the models calibrate
// again).
func TestRefusesFIFO(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(fifo string) error
	}{
		{"calibration file", func(fifo string) error {
			var buf bytes.Buffer
			var c Calibration
			c.Persist(fifo, []string{"-calibrate", "10m0s"}, slog.New(slog.NewTextHandler(&buf, nil)))
			if !strings.Contains(buf.String(), "saved calibrations unreadable") {
				return errors.New("not logged as unreadable: " + buf.String())
			}
			return errors.New(buf.String())
		}},
		{"staged bundle", func(fifo string) error {
			dir, _, err := stage([]string{fifo})
			if err == nil {
				os.RemoveAll(dir)
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "fifo")
			fsutiltest.Mkfifo(t, fifo)
			err := fsutiltest.ReturnsWithin(t, fifo, func() error { return tc.call(fifo) })
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("FIFO: got %v, want a not-a-regular-file error", err)
			}
		})
	}
}
