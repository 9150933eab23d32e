package nethost

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// sharedData is the folder of real captures (VIGIL_SHARED_DATA, else the
// development machine's default).
func sharedData() string {
	if d := os.Getenv("VIGIL_SHARED_DATA"); d != "" {
		return d
	}
	return "/work/shared/data"
}

// refCapturePath is the 1M-packet reference capture `make bench` builds, or
// "" when it is absent.
func refCapturePath() string {
	p := filepath.Join("..", "..", "..", ".cache", "bench", "netflow-ref-1000000.pcap")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// benignCaptures lists the files under sharedData()/benign (sorted); those
// that are no capture give no packets.
func benignCaptures(tb testing.TB) []string {
	var files []string
	root := filepath.Join(sharedData(), "benign")
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	sort.Strings(files)
	return files
}

// readPackets decodes up to limit packets of a capture (limit ≤ 0: all).
// Captures the decoder rejects give what was read before the error.
func readPackets(tb testing.TB, path string, limit int) []event.Packet {
	tb.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil
	}
	defer src.Close()
	var out []event.Packet
	buf := make([]event.Packet, 1024)
	for limit <= 0 || len(out) < limit {
		k, err := src.Next(context.Background(), buf)
		out = append(out, buf[:k]...)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				tb.Logf("%s: %v", path, err)
			}
			break
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// benchCapture measures f per packet of the reference capture (its first
// 300,000 packets, decoded before the timer starts).
func benchCapture(b *testing.B, f func(e *Extractor, p *event.Packet, raw *Raw, out []float32)) {
	benchCaptureWith(b, func() *Extractor { return New(Config{}) }, f)
}

// benchCaptureWith is benchCapture for any extractor type.
func benchCaptureWith[E any](b *testing.B, mk func() E, f func(e E, p *event.Packet, raw *Raw, out []float32)) {
	path := refCapturePath()
	if path == "" {
		b.Skip("no reference capture (make bench builds it)")
	}
	pk := readPackets(b, path, 300_000)
	out := make([]float32, DimV2)
	var raw Raw
	b.ReportAllocs()
	c0 := cpuTime()
	b.ResetTimer()
	e := mk()
	n := 0
	for b.Loop() {
		if n == len(pk) {
			// a fresh extractor: replaying the capture's timestamps
			// into aged state would change the work
			b.StopTimer()
			e, n = mk(), 0
			b.StartTimer()
		}
		f(e, &pk[n], &raw, out)
		n++
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-c0)/float64(b.N), "cpu-ns/op")
	if x, ok := any(e).(*Extractor); ok {
		b.ReportMetric(float64(x.Stats().Entries), "hosts")
	}
}

// BenchmarkCaptureExtractRaw: ExtractRaw alone (the plugin's per-packet
// call) on real traffic.
func BenchmarkCaptureExtractRaw(b *testing.B) {
	benchCapture(b, func(e *Extractor, p *event.Packet, raw *Raw, _ []float32) { e.ExtractRaw(p, raw) })
}

// BenchmarkCaptureExtract: ExtractRaw + Raw.Features on real traffic.
func BenchmarkCaptureExtract(b *testing.B) {
	benchCapture(b, func(e *Extractor, p *event.Packet, raw *Raw, out []float32) {
		e.ExtractRaw(p, raw)
		raw.Features(out[:Dim])
	})
}

// BenchmarkCaptureExtractV2: the same for nethost/v2.
func BenchmarkCaptureExtractV2(b *testing.B) {
	benchCaptureWith(b, func() *Extractor { return New(Config{V2: true}) }, func(e *Extractor, p *event.Packet, raw *Raw, out []float32) {
		e.ExtractRaw(p, raw)
		raw.Features(out)
	})
}

// decodeExtract reads and decodes the reference capture and runs f on every
// packet, as the e2e harness's nethost-only figure does (read + decode +
// nethost/v1), and returns packets and the goroutine's CPU time.
func decodeExtract(b *testing.B, path string, f func(p *event.Packet)) (int, time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := threadCPU()
	src, err := capture.OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	buf := make([]event.Packet, 1024)
	n := 0
	for {
		k, err := src.Next(context.Background(), buf)
		for i := range buf[:k] {
			f(&buf[i])
		}
		n += k
		if err != nil {
			if !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			break
		}
	}
	return n, threadCPU() - t0
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCaptureDecodeExtract: read + decode + Extract (ExtractRaw and
// Features) of the whole reference capture, in packets per CPU-second.
func BenchmarkCaptureDecodeExtract(b *testing.B) {
	path := refCapturePath()
	if path == "" {
		b.Skip("no reference capture (make bench builds it)")
	}
	out := make([]float32, Dim)
	var total int
	var cpu time.Duration
	for b.Loop() {
		e := New(Config{})
		n, c := decodeExtract(b, path, func(p *event.Packet) { e.Extract(p, out) })
		total += n
		cpu += c
	}
	b.ReportMetric(float64(total)/cpu.Seconds(), "packets/CPU-s")
}

// BenchmarkCaptureDecodeOnly: read + decode of the reference capture, the
// part of BenchmarkCaptureDecodeExtract that is not nethost/v1.
func BenchmarkCaptureDecodeOnly(b *testing.B) {
	path := refCapturePath()
	if path == "" {
		b.Skip("no reference capture (make bench builds it)")
	}
	var total int
	var cpu time.Duration
	for b.Loop() {
		n, c := decodeExtract(b, path, func(p *event.Packet) {})
		total += n
		cpu += c
	}
	b.ReportMetric(float64(total)/cpu.Seconds(), "packets/CPU-s")
}
