package pluginhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/internal/cloexec"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/ring"
)

// Descriptor numbers of the ring and the wake pipe in the plugin: they are
// ExtraFiles[0] and ExtraFiles[1] (fd 3+i).
const (
	pluginRingFD = 3
	pluginWakeFD = 4
)

// instance is one running plugin process.
type instance struct {
	client  *plugin.Client
	proc    *os.Process // the plugin process (nil in tests that fake an instance)
	det     *sdk.Client
	info    sdk.PluginInfo
	pid     int
	started time.Time

	ring *ring.Ring // nil for plugins without a packet ring
	prod *ring.Producer

	privDir string // the confined plugin's private directory ("" unconfined)

	mu   sync.Mutex // serializes ring writes with retirement
	dead bool

	cancel   context.CancelFunc // ends the Consume stream and the watcher
	done     chan struct{}      // closed when the instance has ended
	doneOnce sync.Once
	lastEnd  atomic.Uint64
	errMu    sync.Mutex
	err      error
	stopOnce sync.Once
}

// tryPush runs f on the producer unless the instance was retired.
func (i *instance) tryPush(f func(p *ring.Producer) int) (int, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.dead || i.prod == nil {
		return 0, false
	}
	return f(i.prod), true
}

func (i *instance) end(err error) {
	i.setErr(err)
	i.doneOnce.Do(func() { close(i.done) })
}

func (i *instance) endErr() error {
	i.errMu.Lock()
	defer i.errMu.Unlock()
	return i.err
}

// killWait bounds go-plugin's Kill before the host kills the process
// itself, and then again before it stops waiting for Kill.
const killWait = 5 * time.Second

// kill stops a plugin process with go-plugin's Kill (which asks it to
// exit, then kills it), bounded. Kill waits for the plugin's answer to its
// shutdown request as long as the process lives: a plugin that never
// answers (stopped, or compromised) held it, and with it a failed launch,
// the restart of a hung plugin and the agent's shutdown, for ever. After
// killWait the host kills the process (proc, when known); a Kill still
// waiting killWait after that (a child of the plugin holding its output
// open) is left behind, logged.
func kill(client *plugin.Client, proc *os.Process, log *slog.Logger) {
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		client.Kill()
	}()
	select {
	case <-killed:
		return
	case <-time.After(killWait):
	}
	pid := 0
	if proc != nil {
		pid = proc.Pid
		log.Warn("plugin did not exit when asked: killing it", "pid", pid)
		_ = proc.Kill()
	}
	select {
	case <-killed:
	case <-time.After(killWait):
		log.Error("plugin killed, but go-plugin still waits for it (its output is held open); going on", "pid", pid)
	}
}

// stop kills the process (kill) and waits until the instance's goroutines
// are done.
func (i *instance) stop(log *slog.Logger) {
	i.stopOnce.Do(func() {
		i.cancel()
		kill(i.client, i.proc, log)
		<-i.done
		if i.privDir != "" {
			_ = os.RemoveAll(i.privDir)
		}
	})
}

// sysProcAttr returns the plugin's process attributes (procAttr) for the
// agent's privileges.
func (h *Host) sysProcAttr() *syscall.SysProcAttr {
	return procAttr(&h.cfg, processPrivileges())
}

// confinement is one launch's sandbox, applied by startConfined.
type confinement struct {
	abi     int             // Landlock ABI (0: no Landlock)
	ruleset int             // the ruleset's descriptor (-1: no Landlock)
	flags   uintptr         // landlock_restrict_self flags
	dir     string          // the plugin's private directory ("": no Landlock)
	filter  *unix.SockFprog // the seccomp socket filter (nil: none)
}

// describe names the sandbox for the "plugin started" log line.
func (c *confinement) describe() string {
	var parts []string
	if c.abi > 0 {
		parts = append(parts, fmt.Sprintf("landlock ABI %d", c.abi))
	}
	if c.filter != nil {
		parts = append(parts, "seccomp")
	}
	if len(parts) == 0 {
		return "unavailable"
	}
	return strings.Join(parts, ", ")
}

// confine prepares the sandbox of a launch with arguments args and process
// attributes attr: the plugin's private directory, its Landlock ruleset and
// the socket filter. Whichever of Landlock and the filter is unavailable is
// counted and warned about once, and the plugin starts with the other. It
// returns nil (and no error) when the plugin starts unconfined:
// Sandbox.Disable, or neither available.
func (h *Host) confine(args []string, attr *syscall.SysProcAttr) (*confinement, error) {
	if h.cfg.Sandbox.Disable {
		return nil, nil
	}
	filter, ferr := socketFilter()
	if ferr != nil {
		filter = nil
		h.unfilteredLaunch(ferr)
	}
	abi, err := landlockABI()
	if err != nil {
		h.unconfined.Add(1)
		warnUnconfined.Do(func() {
			if filter == nil {
				h.log.Warn("Landlock is unavailable: detector plugins run unconfined, with the file system and network access of the agent's user",
					"reason", unavailableHint(err), "err", err)
				return
			}
			h.log.Warn("Landlock is unavailable: detector plugins run unconfined, with the file system access of the agent's user (the seccomp filter still refuses them every socket but Unix sockets)",
				"reason", unavailableHint(err), "err", err)
		})
		if filter == nil {
			return nil, nil
		}
		// The filter alone, on a launching thread of its own. Non-dumpable:
		// otherwise a plugin of the agent's user could ptrace the agent's
		// unfiltered threads or take its sockets (pidfd_getfd).
		if err := noDumpOnce(); err != nil {
			return nil, err
		}
		return &confinement{ruleset: -1, filter: filter}, nil
	}
	if err := noDumpOnce(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(h.cfg.Sandbox.TempDir, "vigil-plugin-")
	if err != nil {
		return nil, fmt.Errorf("plugin private directory: %w", err)
	}
	if c := attr.Credential; c != nil && int(c.Uid) != os.Geteuid() {
		// The plugin runs as another user: give it the directory, or
		// (no CAP_CHOWN) let it create entries there, sticky.
		if err := os.Chown(dir, int(c.Uid), int(c.Gid)); err != nil {
			if err := os.Chmod(dir, 0o1733); err != nil {
				_ = os.RemoveAll(dir)
				return nil, fmt.Errorf("plugin private directory: %w", err)
			}
		}
	}
	ro := append(slices.Clone(h.cfg.Sandbox.ReadOnly), bundleArgs(args)...)
	ro = append(ro, ortDirs(h.cfg.Env)...)
	pol := buildPolicy(abi, policyInput{Binary: h.cfg.Path, Interp: elfInterp(h.cfg.Path), ReadOnly: ro, Private: dir})
	for _, p := range pol.Skipped {
		h.log.Debug("plugin sandbox: path does not exist, skipped", "path", p)
	}
	fd, err := pol.create()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("plugin sandbox: %w", err)
	}
	h.log.Debug("plugin sandbox", "landlock_abi", abi, "handled_fs", fmt.Sprintf("%#x", pol.HandledFS),
		"handled_net", fmt.Sprintf("%#x", pol.HandledNet), "scoped", fmt.Sprintf("%#x", pol.Scoped), "rules", pol.Rules,
		"seccomp", filter != nil)
	return &confinement{abi: abi, ruleset: fd, flags: restrictFlags(abi), dir: dir, filter: filter}, nil
}

// unfilteredLaunch counts a launch that starts without the socket filter
// and warns about the first.
func (h *Host) unfilteredLaunch(err error) {
	h.unfiltered.Add(1)
	warnUnfiltered.Do(func() {
		h.log.Warn("the seccomp socket filter is unavailable: detector plugins may create sockets of any family (UDP, MPTCP, raw, netlink) and use io_uring; Landlock, when available, still refuses them TCP",
			"err", err)
	})
}

// launch starts one plugin process whose ring starts at sequence base.
func (h *Host) launch(ctx context.Context, base uint64) (_ *instance, err error) {
	sum, fresh, err := h.pin()
	if err != nil {
		return nil, err
	}
	r, err := ring.Create(h.cfg.RingSlots, base)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("wake pipe: %w", err)
	}
	cleanupRing := func() {
		_ = pw.Close()
		_ = r.Close()
	}
	var secure *plugin.SecureConfig
	if !fresh {
		// Pinned earlier (Config.Checksum, an earlier launch): go-plugin
		// hashes the file again and refuses it unless it matches.
		secure = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	args := h.cfg.Args
	if h.cfg.LaunchArgs != nil {
		args = append(slices.Clone(args), h.cfg.LaunchArgs()...)
	}
	cmd := exec.Command(h.cfg.Path, args...)
	cmd.Env = append([]string{}, h.cfg.Env...)
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{r.File(), pr}
	cmd.SysProcAttr = h.sysProcAttr()
	conf, err := h.confine(args, cmd.SysProcAttr)
	if err != nil {
		_ = pr.Close()
		cleanupRing()
		return nil, fmt.Errorf("launch %s: %w", h.cfg.Path, err)
	}
	// The plugin inherits its standard streams and its ExtraFiles (which
	// os/exec hands over whatever their flag) and nothing else: not the
	// descriptors the agent holds without the flag (gopacket's capture
	// sockets, those the agent inherited from whoever started it). The
	// agent executes nothing but plugins (deps_test), so the flag changes
	// nothing else for it.
	if err := cloexec.All(); err != nil {
		h.log.Warn("cannot mark the agent's descriptors close-on-exec: the plugin may inherit some", "err", err)
	}
	if conf != nil && conf.dir != "" {
		// go-plugin's server creates its Unix socket in
		// PLUGIN_UNIX_SOCKET_DIR (default: TMPDIR, or /tmp).
		cmd.Env = append(cmd.Env, "TMPDIR="+conf.dir, plugin.EnvUnixSocketDir+"="+conf.dir)
	}
	cleanupDir := func() {
		if conf != nil && conf.dir != "" {
			_ = os.RemoveAll(conf.dir)
		}
	}
	binName := filepath.Base(h.cfg.Path)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginMap(nil, nil),
		Cmd:              cmd,
		SecureConfig:     secure,
		AutoMTLS:         true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		StartTimeout:     h.cfg.StartTimeout,
		Logger:           newHCLog(h.log, binName),
		Stderr:           &stderrWriter{log: h.log.With("stream", "plugin"), dropped: &h.logDropped},
	})
	// Client.Start forks the plugin on the calling goroutine (cmd.Start),
	// then waits for its handshake: it runs on the thread that
	// startConfined restricted and filtered (or withoutAmbientCaps
	// cleared), so the plugin inherits that thread's confinement. Client
	// then dials the plugin's socket from an ordinary, unrestricted
	// goroutine.
	start := func() error {
		_, err := client.Start()
		return err
	}
	if conf != nil {
		var filterErr error
		filterErr, err = startConfined(conf, start, func() bool { return !client.Exited() })
		if conf.ruleset >= 0 {
			_ = unix.Close(conf.ruleset)
		}
		if filterErr != nil {
			conf.filter = nil
			h.unfilteredLaunch(filterErr)
		}
	} else {
		err = withoutAmbientCaps(start)
	}
	var rpc plugin.ClientProtocol
	if err == nil {
		rpc, err = client.Client()
	}
	_ = pr.Close()
	if err != nil {
		kill(client, cmd.Process, h.log)
		cleanupRing()
		cleanupDir()
		return nil, fmt.Errorf("launch %s: %w", h.cfg.Path, err)
	}
	defer func() {
		if err != nil {
			kill(client, cmd.Process, h.log)
			cleanupRing()
			cleanupDir()
		}
	}()
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense %q: %w", sdk.PluginName, err)
	}
	det, ok := raw.(*sdk.Client)
	if !ok {
		return nil, fmt.Errorf("dispense %q: unexpected type %T", sdk.PluginName, raw)
	}
	ictx, icancel := context.WithTimeout(ctx, h.cfg.StartTimeout)
	defer icancel()
	info, err := det.Info(ictx)
	if err != nil {
		return nil, err
	}
	if info.Name == "" || info.EventKind == sdk.EventUnspecified {
		return nil, fmt.Errorf("plugin info %+v: name and event kind required", info.Info)
	}
	inst := &instance{
		client: client, proc: cmd.Process, det: det, info: info, started: time.Now(), done: make(chan struct{}),
	}
	sandbox := "off"
	if conf != nil {
		inst.privDir = conf.dir
		sandbox = conf.describe()
	} else if !h.cfg.Sandbox.Disable {
		sandbox = "unavailable"
	}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	sctx, scancel := context.WithCancel(context.Background())
	inst.cancel = scancel
	defer func() {
		if err != nil {
			scancel()
		}
	}()
	if info.EventKind == sdk.EventPacket {
		if info.RingLayoutVersion != ring.LayoutVersion || info.RecordLayoutVersion != event.PacketLayoutVersion {
			return nil, fmt.Errorf("plugin speaks ring layout %d / record layout %d, want %d / %d",
				info.RingLayoutVersion, info.RecordLayoutVersion, ring.LayoutVersion, event.PacketLayoutVersion)
		}
		// The stream outlives the launch (its context is the instance's),
		// but the wait for the attach acknowledgement is bounded like the
		// rest of the launch: a plugin that never sends it would otherwise
		// hold Start, a restart and Close for ever.
		attach := time.AfterFunc(h.cfg.StartTimeout, scancel)
		stream, tail, err := det.Consume(sctx, sdk.ConsumeConfig{
			RingFD: pluginRingFD, WakeFD: pluginWakeFD, MaxBatch: h.cfg.MaxBatch, MaxDelay: h.cfg.MaxDelay,
		})
		if !attach.Stop() {
			return nil, fmt.Errorf("plugin did not attach to its ring within %s: %w", h.cfg.StartTimeout, context.DeadlineExceeded)
		}
		if err != nil {
			return nil, err
		}
		if tail != base {
			return nil, fmt.Errorf("plugin attached at tail %d, want %d", tail, base)
		}
		prod, err := ring.NewProducer(r, pw)
		if err != nil {
			return nil, err
		}
		inst.ring, inst.prod = r, prod
		inst.lastEnd.Store(base)
		go h.receive(inst, stream)
	} else {
		cleanupRing()
	}
	go watchExit(sctx, inst, h.cfg.StallTimeout)
	h.log.Info("plugin started", "pid", inst.pid, "name", info.Name, "version", info.Version,
		"kind", info.EventKind.String(), "ring_base", base, "sandbox", sandbox)
	return inst, nil
}

// watchExit ends the instance when its process exits (go-plugin offers no
// channel for that; polling Exited is cheap). For ring plugins the results
// stream usually notices first. It also stops a ring plugin that is alive
// but hung: records wait in its ring and no result came for stall (> 0).
func watchExit(ctx context.Context, inst *instance, stall time.Duration) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var waitEnd uint64 // the results' end while records wait, since waitSince
	var waitSince time.Time
	for {
		select {
		case <-ctx.Done():
			// Without a ring no results stream ends the instance: end it
			// here, or Close would wait for it for ever.
			if inst.ring == nil {
				inst.end(ctx.Err())
			}
			return
		case <-t.C:
			if inst.client.Exited() {
				inst.cancel()
				if inst.ring == nil {
					inst.end(errors.New("plugin process exited"))
				}
				return
			}
			if inst.ring == nil || stall <= 0 {
				continue
			}
			head, ok := inst.head()
			last := inst.lastEnd.Load()
			switch {
			case !ok:
				return
			case head <= last:
				waitSince = time.Time{} // nothing waits for the plugin
			case waitSince.IsZero() || last != waitEnd:
				waitEnd, waitSince = last, time.Now()
			case time.Since(waitSince) >= stall:
				// Ending the results stream makes receive end the instance;
				// the supervisor then kills the process and restarts it.
				inst.setErr(fmt.Errorf("plugin hung: no result for %s with %d records waiting", stall, head-last))
				inst.cancel()
				return
			}
		}
	}
}

// head returns the ring's published sequence; ok is false once the
// instance was retired (its ring is unmapped then).
func (i *instance) head() (uint64, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.dead {
		return 0, false
	}
	return i.ring.Head(), true
}

// setErr records why the instance is ending (the first reason wins).
func (i *instance) setErr(err error) {
	i.errMu.Lock()
	defer i.errMu.Unlock()
	if i.err == nil {
		i.err = err
	}
}

// receive delivers batch results until the stream ends, then ends the
// instance.
func (h *Host) receive(inst *instance, s *sdk.ResultStream) {
	for {
		br, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("plugin ended the results stream")
			}
			inst.end(err)
			return
		}
		last := inst.lastEnd.Load()
		if br.Start != last || br.End < br.Start || br.End > inst.ring.Head() {
			h.log.Error("plugin sent an out-of-order batch result; stopping it",
				"start", br.Start, "end", br.End, "expected_start", last)
			inst.end(fmt.Errorf("batch result [%d, %d) out of order", br.Start, br.End))
			inst.cancel()
			return
		}
		// Only anomalies of distinct records of the batch, standing for
		// at most its records.
		var refused uint64
		br.Anomalies, refused = sdk.CheckResult(&br.Stats, br.Anomalies, br.Start, br.End)
		h.refused(refused)
		inst.lastEnd.Store(br.End)
		h.scored.Add(br.End - br.Start)
		h.anomalies.Add(sdk.CountRecords(br.Anomalies)) // anomalous records (a merged anomaly counts its packets)
		if br.Err != "" {
			h.batchErrors.Add(1)
		}
		if h.cfg.OnResult != nil {
			h.cfg.OnResult(br)
		}
	}
}
