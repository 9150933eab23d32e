package pluginhost_test

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/ring"
)

// probeHang makes the probe plugin's ScorePackets hang (probe op
// "hang-score").
var probeHang atomic.Bool

// TestHungPluginRestarted: a ring plugin that is alive but hung (its
// detector stuck on some input, as crafted traffic might make it) returned
// no result and never died, so the host never restarted it: packet
// detection stopped for good, and every Push waited FullWait before it
// dropped its records. The host must stop it once no result came for
// StallTimeout while records waited, and restart it, counting every record.
func TestHungPluginRestarted(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: self, Env: []string{probeEnv + "=1"}, KeepPrivileges: true,
		Logger: testLogger(t), RingSlots: ring.MinSlots * 4, MaxBatch: 16, MaxDelay: time.Millisecond,
		FullWait: 10 * time.Millisecond, MinBackoff: 10 * time.Millisecond, StallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = h.Close(cctx)
	}()
	if got := probeIn(t, h, "hang-score"); got != "ok" {
		t.Fatalf("hang-score: %s", got)
	}
	// The model the host reloads into a restarted plugin: not the hang.
	if got := probeIn(t, h, "read:/proc/self/status"); got != "ok" {
		t.Fatalf("read: %s", got)
	}
	pkts := make([]event.Packet, 8)
	deadline := time.Now().Add(20 * time.Second)
	for h.Stats().Restarts == 0 {
		if time.Now().After(deadline) {
			st := h.Stats()
			t.Fatalf("hung plugin not restarted in 20 s (StallTimeout 1 s): published %d, scored %d, dropped full %d",
				st.Published, st.Scored, st.DroppedFull)
		}
		if _, err := h.Push(ctx, pkts); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The restarted plugin (a new process: it does not hang) scores again.
	scored := h.Stats().Scored
	waitFor(t, "records scored by the restarted plugin", 20*time.Second, func() bool {
		if _, err := h.Push(ctx, pkts); err != nil {
			t.Fatal(err)
		}
		return h.Stats().Scored > scored
	})
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if err := h.Close(cctx); err != nil {
		t.Fatal(err)
	}
	st := h.Stats()
	if st.Scored+st.LostInFlight+st.Unreported != st.Published {
		t.Errorf("scored %d + lost in flight %d + unreported %d != published %d",
			st.Scored, st.LostInFlight, st.Unreported, st.Published)
	}
}

// stuckConsumeEnv makes the test binary a plugin (the probe) that never
// acknowledges the ring attach: its Consume call waits until the host ends
// it.
const stuckConsumeEnv = "VIGIL_PLUGINHOST_STUCK_CONSUME"

func serveStuckConsume() bool {
	if os.Getenv(stuckConsumeEnv) != "1" {
		return false
	}
	stuck := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/Consume") {
			<-ss.Context().Done()
			return ss.Context().Err()
		}
		return handler(srv, ss)
	}
	serveProbeWith(grpc.StreamInterceptor(stuck))
	return true
}

// TestStuckAttachTimesOut: a plugin that never acknowledged the ring
// attach (a broken plugin, or one stopped at that moment) held the launch
// for ever: Start never returned, a restart never ended, and Close, which
// waits for the supervisor, hung the agent's shutdown. The attach must be
// bounded by StartTimeout like the rest of the launch.
func TestStuckAttachTimesOut(t *testing.T) {
	startFails(t, stuckConsumeEnv, "never attached", 15*time.Second)
}

// TestRestartReloadsEveryFamily: the models handed to a running plugin are
// reloaded into a restarted one, the last of each feature-set family. The
// host remembered only the last model loaded: after updates of netflow/v1
// and then of nethost, a crash put the netflow slot back on its start
// bundle while the agent reported the update as active.
func TestRestartReloadsEveryFamily(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: self, Env: []string{probeEnv + "=1"}, KeepPrivileges: true,
		Logger: testLogger(t), RingSlots: ring.MinSlots, MaxBatch: 16, MaxDelay: time.Millisecond, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = h.Close(cctx)
	}()
	for _, op := range []string{"model:netflow/v1=nf-2", "model:nethost/v6=nh-8", "model:nethost/v7=nh-9"} {
		if _, err := h.LoadModel(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	const want = "probe netflow=nf-2 nethost=nh-9"
	if hl, err := h.Health(ctx); err != nil || hl.Message != want {
		t.Fatalf("health %q %v, want %q", hl.Message, err, want)
	}
	pid := h.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var msg string
	waitFor(t, "the restarted plugin with its models", 30*time.Second, func() bool {
		if h.PID() == pid || h.PID() == 0 {
			return false
		}
		hl, err := h.Health(ctx)
		msg = hl.Message
		return err == nil && msg == want
	})
}
