package app

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func init() { Register(newRecordCommand) }

// RecordReport is what `record --json` prints.
type RecordReport struct {
	Out     string      `json:"out"`
	Events  int         `json:"events"`
	Seconds float64     `json:"seconds"`
	Stopped string      `json:"stopped"` // "duration", "max-events" or "signal"
	Watch   watch.Stats `json:"watch"`
}

// recordFlushEvery is how often a recording is flushed to its file, so that
// a recorder that is killed loses at most this much.
const recordFlushEvery = 10 * time.Second

func newRecordCommand(g *Globals) *cobra.Command {
	var (
		dirs, include, exclude []string
		out                    string
		duration               time.Duration
		maxEvents              int
		asJSON                 bool
	)
	cmd := &cobra.Command{
		Use:   "record --dir DIR... --out FILE [--duration 1h] [--max-events N]",
		Short: "Record the file events of watched folders to a trace, to train a fileactivity model on",
		Long: "Record watches the folders as the agent's file pipeline does (the same watcher, debouncing and content\n" +
			"sampling) and writes every event to a file-event trace, with no detector and no server. A release\n" +
			"engineer trains a site's fileactivity model on such traces of normal activity:\n" +
			"  vigilctl model train --feature-set fileactivity/v1 --benign TRACES/\n" +
			"and checks a bundle's findings on a recorded day with `vigil-agent scan --trace FILE --bundle B`.\n" +
			"FILE is gzip-compressed when it ends in .gz, and is written 0600 (it names the site's files). Recording\n" +
			"stops after --duration, after --max-events, or on SIGINT/SIGTERM; the trace is flushed every 10 s, and\n" +
			"a trace cut short by a kill is still readable up to its last complete frame.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(dirs) == 0 || out == "" {
				return &exitError{code: 2, msg: "record: --dir and --out are required"}
			}
			if duration < 0 || maxEvents < 0 {
				return &exitError{code: 2, msg: "record: --duration and --max-events must not be negative"}
			}
			if err := outsideRoots(out, dirs); err != nil {
				return &exitError{code: 2, msg: "record: " + err.Error()}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, err := recordTrace(ctx, g, watch.Config{Roots: dirs, Include: include, Exclude: exclude}, out, duration, maxEvents)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.Stdout, rep)
			}
			fmt.Fprintf(g.Stdout, "recorded %d file events in %.1f s to %s (stopped by %s); watcher: %d dropped, %d queue overflows, %d rescans\n",
				rep.Events, rep.Seconds, rep.Out, rep.Stopped, rep.Watch.Dropped, rep.Watch.Overflows, rep.Watch.Rescans)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&dirs, "dir", nil, "folder to watch recursively (repeatable)")
	f.StringArrayVar(&include, "include", nil, "file glob to record (repeatable; default all)")
	f.StringArrayVar(&exclude, "exclude", nil, "file or folder glob to skip (repeatable)")
	f.StringVar(&out, "out", "", "trace file to write (gzip-compressed if it ends in .gz); must lie outside the watched folders")
	f.DurationVar(&duration, "duration", time.Hour, "how long to record (0: until SIGINT/SIGTERM or --max-events)")
	f.IntVar(&maxEvents, "max-events", 1_000_000, "stop after this many events (0: no bound)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

// outsideRoots refuses an output file inside a watched folder: the recorder
// would record its own writes.
func outsideRoots(out string, roots []string) error {
	o, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if d, err := filepath.EvalSymlinks(filepath.Dir(o)); err == nil {
		o = filepath.Join(d, filepath.Base(o))
	}
	for _, r := range roots {
		a, err := filepath.Abs(r)
		if err != nil {
			return fmt.Errorf("--dir %s: %w", r, err)
		}
		if e, err := filepath.EvalSymlinks(a); err == nil {
			a = e
		}
		if rel, err := filepath.Rel(a, o); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("--out %s lies inside the watched folder %s", out, r)
		}
	}
	return nil
}

// recordTrace watches cfg's roots and writes their events to out until ctx
// ends, duration passes (0: no limit) or maxEvents are written (0: no limit).
func recordTrace(ctx context.Context, g *Globals, cfg watch.Config, out string, duration time.Duration, maxEvents int) (*RecordReport, error) {
	log := g.Logger()
	w, err := watch.New(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	defer f.Close()
	// 0600 also when the file existed (O_CREAT's mode applies only to a new
	// file): the trace names the site's files.
	if err := f.Chmod(0o600); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<16)
	var sink io.Writer = bw
	var zw *gzip.Writer
	if strings.HasSuffix(out, ".gz") {
		zw = gzip.NewWriter(bw)
		sink = zw
	}
	tw := event.NewTraceWriter(sink)
	flush := func() error {
		if err := tw.Flush(); err != nil {
			return err
		}
		if zw != nil {
			if err := zw.Flush(); err != nil {
				return err
			}
		}
		return bw.Flush()
	}
	if err := flush(); err != nil { // the header: an empty recording is a valid trace
		return nil, fmt.Errorf("record: %w", err)
	}

	rep := &RecordReport{Out: out, Stopped: "signal"}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if duration > 0 {
		var c2 context.CancelFunc
		wctx, c2 = context.WithTimeout(wctx, duration)
		defer c2()
	}
	// The watcher drops (and counts) a batch when this is full; gzip keeps up
	// with far more than a busy tree's events.
	batches := make(chan []event.File, 4096)
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = w.Run(wctx, batches) // closes batches when it returns
	}()
	start := time.Now()
	log.Info("recording file events", "dirs", cfg.Roots, "out", out, "duration", duration, "max_events", maxEvents)
	tick := time.NewTicker(recordFlushEvery)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case b, ok := <-batches:
			if !ok {
				break loop
			}
			if werr != nil {
				continue // drain until the watcher stops
			}
			if maxEvents > 0 && tw.Events()+len(b) >= maxEvents {
				b = b[:maxEvents-tw.Events()]
				rep.Stopped = "max-events"
				cancel()
			}
			if werr = tw.Write(b); werr != nil {
				cancel()
			}
		case <-tick.C:
			if werr == nil {
				if werr = flush(); werr != nil {
					cancel()
				}
			}
		}
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	rep.Events = tw.Events()
	rep.Watch = w.Stats()
	if rep.Stopped == "signal" && ctx.Err() == nil {
		rep.Stopped = "duration"
	}
	if werr == nil {
		werr = flush()
	}
	if werr == nil && zw != nil {
		werr = zw.Close()
		if werr == nil {
			werr = bw.Flush()
		}
	}
	if werr == nil {
		werr = f.Close()
	}
	if werr != nil {
		return nil, fmt.Errorf("record: write %s: %w", out, werr)
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
		return rep, fmt.Errorf("record: watcher: %w", runErr)
	}
	if rep.Watch.Dropped > 0 || rep.Watch.Overflows > 0 {
		log.Warn("events lost while recording", "dropped", rep.Watch.Dropped, "overflows", rep.Watch.Overflows)
	}
	return rep, nil
}
