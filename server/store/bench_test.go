package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInsertFindings measures durable ingest (each batch committed with
// synchronous=FULL before InsertFindings returns), in batches of 500, from
// one writer and from 100 concurrent writers (agents). ns/op is per finding;
// findings/s is wall-clock throughput and cpu-us/finding the process CPU
// time per finding (useful when other work shares the machine).
func BenchmarkInsertFindings(b *testing.B) {
	const batch = 500
	for _, writers := range []int{1, 100} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			ctx := context.Background()
			db := openTest(b)
			// Batches are built before the clock starts: this measures the
			// store, not protobuf construction.
			nb := (b.N + batch - 1) / batch
			per := (nb + writers - 1) / writers
			work := make([][][]*wirev1.Finding, writers)
			for w := range writers {
				for i := range per {
					work[w] = append(work[w], mkFindings(uint64(i*batch+1), batch, "netflow"))
				}
			}
			var taken atomic.Int64
			cpu0 := cpuTime()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					agent := fmt.Sprintf("a-%d", w)
					for _, fs := range work[w] {
						if taken.Add(1) > int64(nb) {
							return
						}
						if _, err := db.InsertFindings(ctx, agent, "acme", fs); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			cpu := cpuTime() - cpu0
			n, _ := db.CountFindings(ctx, "")
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "findings/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-us/finding")
		})
	}
}
