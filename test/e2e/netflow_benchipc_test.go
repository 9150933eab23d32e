package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func gopacketCI(tsNs int64, capLen, wire int) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: time.Unix(0, tsNs).UTC(), CaptureLength: capLen, Length: wire}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// exampleBinary returns the example plugin (its -noop detector measures the
// ring alone), built when VIGIL_BIN has none.
func exampleBinary(t *testing.T, in *nfInstall) string {
	p := filepath.Join(in.Dir, "vigil-detector-example")
	if nfFileExists(p) {
		return p
	}
	// The plugin runs as nobody when the agent is root: it must be able to
	// reach its binary through both levels of the test's temp directory.
	dir := t.TempDir()
	_ = os.Chmod(filepath.Dir(dir), 0o755)
	_ = os.Chmod(dir, 0o755)
	cmd := exec.Command("go", "build", "-o", dir+"/", "./plugins/example/cmd/vigil-detector-example")
	cmd.Dir = nfRepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("build example plugin: %v\n%s", err, out)
		return ""
	}
	return filepath.Join(dir, "vigil-detector-example")
}

// procCPU is a process's user+system CPU time from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / 100 // USER_HZ
}

// ringNoopCPU reads and decodes the capture in this process and pushes it
// through the ring into the example plugin's no-op detector; it returns the
// CPU of both sides.
func ringNoopCPU(t *testing.T, plugin, path string) (time.Duration, time.Duration, error) {
	h, err := pluginhost.New(pluginhost.Config{Path: plugin, Args: []string{"-noop"}, FullWait: time.Minute})
	if err != nil {
		return 0, 0, err
	}
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer func() { _ = h.Close(ctx) }()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	p0 := procCPU(h.PID())
	start := time.Now()
	src, err := capture.OpenFile(path)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	buf := make([]event.Packet, 1024)
	var n uint64
	for {
		k, err := src.Next(ctx, buf)
		if k > 0 {
			if _, perr := h.Push(ctx, buf[:k]); perr != nil {
				return 0, 0, perr
			}
			n += uint64(k)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for h.Stats().Scored < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	p1 := procCPU(h.PID())
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	self := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
	return self + (p1 - p0), time.Since(start), nil
}
