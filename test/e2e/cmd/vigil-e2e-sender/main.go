// Command vigil-e2e-sender is a TEST-ONLY agent for the end-to-end tests: it
// uses the agent's own spool (agent/spool) and uplink (agent/uplink) with an
// enrolled state directory, and appends synthetic findings until the spool
// has assigned exactly --total sequence numbers, while the uplink drains the
// spool to the server. It survives SIGKILL like the agent does: a restart
// continues from the spool's next sequence number, so the server must end
// with exactly --total findings. It exits 0 once every finding is
// acknowledged. Progress goes to --progress as one JSON document, rewritten
// atomically.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Progress is what the sender reports.
type Progress struct {
	Assigned  uint64 `json:"assigned"` // seqs the spool assigned (next_seq - 1)
	Depth     uint64 `json:"depth"`
	AckedSeq  uint64 `json:"acked_seq"`
	Dropped   uint64 `json:"dropped"`
	Connected bool   `json:"connected"`
	Connects  uint64 `json:"connects"`
	Done      bool   `json:"done"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vigil-e2e-sender:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		dir      = flag.String("state", "", "enrolled agent state directory")
		total    = flag.Uint64("total", 100000, "findings to assign in total (across restarts)")
		batch    = flag.Int("batch", 500, "findings per spool append")
		rate     = flag.Float64("rate", 0, "findings per second to append (0: as fast as the spool takes them)")
		progress = flag.String("progress", "", "progress file (JSON, rewritten)")
		idle     = flag.Duration("idle-timeout", 5*time.Second, "QUIC idle timeout (the agent's default is 45 s)")
		verbose  = flag.Bool("v", false, "debug logs on stderr")
	)
	flag.Parse()
	if *dir == "" {
		return errors.New("--state is required")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	sd := state.Dir(*dir)
	sp, err := spool.Open(sd.Path(state.SpoolFile), spool.Options{MaxBytes: 1 << 30, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer sp.Close()
	c, err := uplink.New(uplink.Config{
		Spool: sp, Credentials: sd, Log: log,
		BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second, AckTimeout: 15 * time.Second,
		QUIC: &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: *idle, KeepAlivePeriod: *idle / 4},
	})
	if err != nil {
		return err
	}
	uctx, cancelUplink := context.WithCancel(ctx)
	defer cancelUplink()
	upDone := make(chan error, 1)
	go func() { upDone <- c.Run(uctx) }()

	appendDone := make(chan error, 1)
	go func() { appendDone <- appendAll(ctx, sp, *total, *batch, *rate) }()

	report := func() Progress {
		st := sp.Stats()
		us := c.Stats()
		p := Progress{Assigned: st.NextSeq - 1, Depth: st.Depth, AckedSeq: st.AckedSeq, Dropped: st.Dropped,
			Connected: us.Connected, Connects: us.Connects}
		p.Done = p.Assigned >= *total && p.Depth == 0
		if *progress != "" {
			writeProgress(*progress, p)
		}
		return p
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			report()
			return nil
		case err := <-appendDone:
			if err != nil {
				return err
			}
			appendDone = nil
		case err := <-upDone:
			return fmt.Errorf("uplink: %w", err)
		case <-t.C:
		}
		if p := report(); p.Done {
			if p.Dropped != 0 {
				return fmt.Errorf("spool dropped %d findings", p.Dropped)
			}
			cancelUplink()
			<-upDone
			return nil
		}
	}
}

// appendAll appends findings until the spool has assigned total seqs.
func appendAll(ctx context.Context, sp *spool.Spool, total uint64, batch int, rate float64) error {
	start := time.Now()
	startSeq := sp.Stats().NextSeq - 1
	for {
		assigned := sp.Stats().NextSeq - 1
		if assigned >= total {
			return nil
		}
		if rate > 0 {
			due := startSeq + uint64(time.Since(start).Seconds()*rate)
			if assigned >= due {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
		}
		n := int(min(uint64(batch), total-assigned))
		now := time.Now().UnixNano()
		fs := make([]*wirev1.Finding, n)
		for i := range fs {
			fs[i] = &wirev1.Finding{
				Detector: "e2e", Severity: wirev1.Severity_SEVERITY_MEDIUM, Count: 1, Score: 0.9, Threshold: 0.5,
				TimeUnixNano: now, FirstSeenUnixNano: now, LastSeenUnixNano: now,
				Summary: "e2e exactly-once finding",
				Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 40000, DstPort: 80, Proto: "tcp"},
			}
		}
		if err := sp.Append(ctx, fs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("append: %w", err)
		}
	}
}

func writeProgress(path string, p Progress) {
	data, _ := json.Marshal(p)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err == nil {
		_ = os.Rename(tmp, path)
	}
}
