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
		rows, t0 := 0, ThreadCPU()
		if t0 < 0 {
			return 0, errors.New("speed: no thread CPU time on this system")
		}
		for ThreadCPU()-t0 < minCPU {
			for start := 0; start+batch <= data.Rows; start += batch {
				if _, _, err := sc.Score(data.Data[start*data.Cols:(start+batch)*data.Cols], batch); err != nil {
					return 0, fmt.Errorf("speed: score rows %d..%d: %w", start, start+batch, err)
				}
				rows += batch
			}
		}
		best = max(best, float64(rows)/(ThreadCPU()-t0).Seconds())
	}
	return best, nil
}

// Speeds are an int8 model's and its float model's scoring speeds measured side by side (rows per
// CPU-second of the scoring thread, SideBySide), as the trainers' reports carry them.
type Speeds struct {
	Int8  float64 `json:"int8_rows_per_cpu_s"`
	Float float64 `json:"float_rows_per_cpu_s"`
}

// SideBySide measures int8 and then float on the same rows of data in runs of 256 (Speed, best of
// 3 trials of at least 0.3 s each).
func SideBySide(int8, float Scorer, data ae.Matrix) (Speeds, error) {
	i, err := Speed(int8, data, 256, 3, 0)
	if err != nil {
		return Speeds{}, fmt.Errorf("int8 model: %w", err)
	}
	f, err := Speed(float, data, 256, 3, 0)
	if err != nil {
		return Speeds{}, fmt.Errorf("float model: %w", err)
	}
	return Speeds{Int8: i, Float: f}, nil
}

// ThreadCPU is the calling OS thread's user+system CPU time (Linux RUSAGE_THREAD), or -1.
func ThreadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
