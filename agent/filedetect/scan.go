package filedetect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/agent/contentstats"
	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// DefaultPace is the event-time spacing of the files of a scan.
const DefaultPace = 10 * time.Millisecond

// ScanConfig configures Scan.
type ScanConfig struct {
	Dir         string
	Plugin      string
	Bundle      detect.BundleInfo
	ORTLib      string
	StageBundle bool
	// Sample bounds the reads per file (the watcher's defaults).
	Sample contentstats.Config
	// Pace is the event-time spacing of consecutive files (default 10 ms:
	// the folder is replayed as if it were unpacked at 100 files per
	// second, so the tree's rate features stay those of an ordinary
	// unpack and the content features decide).
	Pace      time.Duration
	Aggregate AggregatorConfig
	Host      pluginhost.Config
	Logger    *slog.Logger
	// Progress, if set, is called after each batch with the files done.
	Progress func(done, total int)
}

// ScanResult is what Scan found.
type ScanResult struct {
	Files    uint64 // regular files scored
	Skipped  uint64 // symbolic links, devices, unreadable files and folders
	Denied   uint64 // of those, files and folders unreadable for lack of permission
	Findings []*wirev1.Finding
	Stats    Stats
}

type scanFile struct {
	path  string
	mtime int64
}

// Scan scores the regular files below cfg.Dir offline: it lists them without
// following symbolic links, orders them by modification time (then path),
// samples each like the watcher does (bounded head and tail, ELF/PE facts)
// and sends them as creates, cfg.Pace apart in event time, to the plugin in
// batches. Findings are stamped with event time.
func Scan(ctx context.Context, cfg ScanConfig) (*ScanResult, error) {
	if cfg.Pace <= 0 {
		cfg.Pace = DefaultPace
	}
	if cfg.Bundle.Path == "" {
		return nil, ErrNoBundle
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("scan: %s: %w", cfg.Dir, err)
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("scan: %s is not a folder", dir)
	}
	res := &ScanResult{}
	var files []scanFile
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			res.Skipped++ // unreadable folder: skip it, keep going
			if errors.Is(err, fs.ErrPermission) {
				res.Denied++
			}
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			res.Skipped++
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			res.Skipped++
			return nil
		}
		files = append(files, scanFile{path: p, mtime: fi.ModTime().UnixNano()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan: walk %s: %w", dir, err)
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].mtime != files[j].mtime {
			return files[i].mtime < files[j].mtime
		}
		return files[i].path < files[j].path
	})
	eng, stop, err := startOffline(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer stop()

	sampler := contentstats.New(cfg.Sample)
	var base int64
	if len(files) > 0 {
		base = files[0].mtime
	}
	if base <= 0 {
		base = 1
	}
	batch := make([]event.File, 0, 1024)
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		ev := event.File{TimeNs: base + int64(i)*int64(cfg.Pace), Op: event.FileCreate, Root: dir, Path: f.path, Size: -1}
		if len(f.path) > event.MaxPathLen {
			res.Skipped++
			continue
		}
		if !sampleFile(sampler, &ev) {
			res.Skipped++
			if ev.Flags&event.FileFlagDenied != 0 {
				res.Denied++
			}
		}
		res.Files++
		batch = append(batch, ev)
		if len(batch) == cap(batch) {
			eng.score(ctx, batch)
			batch = batch[:0]
			if cfg.Progress != nil {
				cfg.Progress(i+1, len(files))
			}
		}
	}
	eng.score(ctx, batch)
	if cfg.Progress != nil {
		cfg.Progress(len(files), len(files))
	}
	res.Findings, res.Stats = eng.finishOffline()
	return res, nil
}

// startOffline starts the plugin for an offline scan: findings stamped with
// event time, emitted when their window closes or at the end.
func startOffline(ctx context.Context, cfg ScanConfig) (*engine, func(), error) {
	if cfg.Bundle.Path == "" {
		return nil, nil, ErrNoBundle
	}
	acfg := cfg.Aggregate
	acfg.EventTime, acfg.UpdateEvery = true, 0
	c := Config{Plugin: cfg.Plugin, Bundle: cfg.Bundle, ORTLib: cfg.ORTLib, StageBundle: cfg.StageBundle,
		Host: cfg.Host, Logger: cfg.Logger, Aggregate: acfg}
	c.defaults()
	eng := &engine{cfg: &c, agg: NewAggregator(acfg)}
	eng.out.Max = math.MaxInt // an offline scan returns every finding
	stop, err := eng.start(ctx, c.Logger)
	if err != nil {
		return nil, nil, fmt.Errorf("scan: %w", err)
	}
	return eng, stop, nil
}

// finishOffline flushes the aggregator and returns every finding.
func (e *engine) finishOffline() ([]*wirev1.Finding, Stats) {
	e.queue(e.agg.Flush())
	return e.out.Take(), e.stats()
}

// TraceResult is what ScanTrace found.
type TraceResult struct {
	Events   uint64 // events replayed
	Seconds  float64
	Findings []*wirev1.Finding
	Stats    Stats
	// Reason says why the trace was not read to its end (the event bound,
	// or a trace cut short inside a frame); empty otherwise.
	Reason string
}

// ScanTrace replays a recorded file-event trace (`vigil-agent record`,
// event.ReadTrace) through the plugin and the aggregator in its own event
// time: the events, roots and timing the live pipeline saw, so a bundle's
// findings on a site's recorded activity can be counted before it is rolled
// out. It reads at most maxEvents events (no bound if 0); cfg.Dir, Pace and
// Sample are not used.
func ScanTrace(ctx context.Context, cfg ScanConfig, path string, maxEvents int) (*TraceResult, error) {
	evs, partial, err := event.ReadTraceFile(path, maxEvents)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	res := &TraceResult{Reason: partial}
	eng, stop, err := startOffline(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer stop()
	const batch = 1024
	for off := 0; off < len(evs); off += batch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		b := evs[off:min(off+batch, len(evs))]
		eng.score(ctx, b)
		eng.queue(eng.agg.Tick(b[len(b)-1].TimeNs))
		if cfg.Progress != nil {
			cfg.Progress(off+len(b), len(evs))
		}
	}
	res.Events = uint64(len(evs))
	if n := len(evs); n > 0 {
		res.Seconds = float64(evs[n-1].TimeNs-evs[0].TimeNs) / 1e9
	}
	res.Findings, res.Stats = eng.finishOffline()
	return res, nil
}

// sampleFile fills ev's size, mode and content statistics; it opens the file
// without following a symbolic link. It reports whether the file was read.
func sampleFile(s *contentstats.Sampler, ev *event.File) bool {
	f, err := os.OpenFile(ev.Path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			ev.Flags |= event.FileFlagVanished
		case errors.Is(err, fs.ErrPermission):
			ev.Flags |= event.FileFlagDenied
		case errors.Is(err, syscall.ELOOP):
			ev.Flags |= event.FileFlagSymlink
		}
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	ev.Size, ev.Mode = fi.Size(), uint32(fi.Mode())
	if fi.Mode()&0o111 != 0 {
		ev.Flags |= event.FileFlagExecutable
	}
	if !fi.Mode().IsRegular() {
		ev.Flags |= event.FileFlagNotRegular
		return false
	}
	if err := s.Analyze(f, fi.Size(), ev.Path, ev); err != nil {
		return false
	}
	return true
}
