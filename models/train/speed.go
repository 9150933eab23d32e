package train

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
)

// Speed measures how many rows of data sc scores per CPU-second of the calling thread, in runs of
// batch rows (256 if 0): the best of trials runs (3 if 0) of at least minCPU (0.3 s if 0) each.
// ONNX Runtime scores on the calling thread with one intra-op thread, so the thread's CPU time is
// the cost per core even on a busy machine, and an int8 and a float model measured one after the
// other on the same rows compare side by side. data must hold at least batch rows.
func Speed(sc Scorer, data ae.Matrix, batch, trials int, minCPU time.Duration) (float64, error) {
	if batch <= 0 {
		batch = 256
	}
	if trials <= 0 {
		trials = 3
	}
	if minCPU <= 0 {
		minCPU = 300 * time.Millisecond
	}
	if data.Rows < batch {
		return 0, fmt.Errorf("speed: %d rows, fewer than one run of %d", data.Rows, batch)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := 0.0
	for range trials {
		rows, t0 := 0, threadCPU()
		if t0 < 0 {
			return 0, errors.New("speed: no thread CPU time on this system")
		}
		for threadCPU()-t0 < minCPU {
			for start := 0; start+batch <= data.Rows; start += batch {
				if _, _, err := sc.Score(data.Data[start*data.Cols:(start+batch)*data.Cols], batch); err != nil {
					return 0, fmt.Errorf("speed: score rows %d..%d: %w", start, start+batch, err)
				}
				rows += batch
			}
		}
		best = max(best, float64(rows)/(threadCPU()-t0).Seconds())
	}
	return best, nil
}

// threadCPU is the calling OS thread's user+system CPU time (Linux RUSAGE_THREAD), or -1.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
