package pluginhost_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// benchHost starts the example plugin in -noop mode (it scores nothing), so
// that the benchmarks measure the IPC path. Benchmarks build the plugin
// without VIGIL_E2E (they run only with -bench).
func benchHost(b *testing.B) *pluginhost.Host {
	b.Helper()
	if exampleBin == "" {
		t := os.Getenv(sdktest.E2EEnv)
		_ = os.Setenv(sdktest.E2EEnv, "1")
		needE2E(b)
		_ = os.Setenv(sdktest.E2EEnv, t)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: exampleBin, Args: []string{"-noop"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// cpuNow returns the CPU time (user+system) of this process and of pid.
func cpuNow(b *testing.B, pid int) (self, plugin time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(st)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime: field 14 of stat
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	plugin = time.Duration(ut+stt) * (time.Second / 100) // USER_HZ = 100
	return self, plugin
}

func reportCPU(b *testing.B, pid int, self0, plug0 time.Duration) {
	self1, plug1 := cpuNow(b, pid)
	n := float64(b.N)
	b.ReportMetric(float64(self1-self0)/n, "agent-cpu-ns/rec")
	b.ReportMetric(float64(plug1-plug0)/n, "plugin-cpu-ns/rec")
}

// BenchmarkRingPlugin pushes 64-byte records through the shared-memory ring
// to a real plugin process (which scores nothing) until the plugin has
// reported results for all of them. ns/op is per record, end to end.
func BenchmarkRingPlugin(b *testing.B) {
	h := benchHost(b)
	pkts := sdktest.SynthPackets(1024)
	ctx := context.Background()
	start := h.Stats().Scored
	self0, plug0 := cpuNow(b, h.PID())
	b.SetBytes(64)
	b.ResetTimer()
	for left := b.N; left > 0; {
		n, err := h.Push(ctx, pkts[:min(left, len(pkts))])
		if err != nil {
			b.Fatal(err)
		}
		left -= n
	}
	for h.Stats().Scored < start+uint64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	reportCPU(b, h.PID(), self0, plug0)
	if st := h.Stats(); st.Lost() != 0 {
		b.Fatalf("lost records: %+v", st)
	}
}

// BenchmarkGRPCScore sends the same records as unary Score calls of 4096
// packed records each (the alternative to the ring). ns/op is per record.
func BenchmarkGRPCScore(b *testing.B) {
	h := benchHost(b)
	pkts := sdktest.SynthPackets(4096)
	ctx := context.Background()
	self0, plug0 := cpuNow(b, h.PID())
	b.SetBytes(64)
	b.ResetTimer()
	for left := b.N; left > 0; {
		k := min(left, len(pkts))
		res, err := h.Score(ctx, pkts[:k])
		if err != nil {
			b.Fatal(err)
		}
		if res.Stats.Count != uint64(k) {
			b.Fatalf("count %d", res.Stats.Count)
		}
		left -= k
	}
	b.StopTimer()
	reportCPU(b, h.PID(), self0, plug0)
}
