package detect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

// Per-sensor calibration (issue 4): a detector plugin started with
// -calibrate observes local events for that grace period without anomalies,
// then raises each model's threshold to the local score quantile
// (plugins/sdk/selfcal). The agent polls the plugin's Health and forwards
// what it says about calibration in its pipeline's Counters, which reach the
// server in every Status: per feature set, calibrated_<set> (0 while the
// model observes, 1 after), the model's own and the active threshold
// (model_threshold_micro_<set>, threshold_micro_<set>, ×1e6), the local
// quantile and its sample size (calibration_local_micro_<set>,
// calibration_samples_<set>). It also keeps each calibrated model's exact
// quantile by digest and gives it back to a restarted plugin (-calibrated),
// so that a crash does not open another silent grace period; with a
// calibration file (Persist) they also survive the agent's restarts.

// CalibrationPoll is how often a plugin's calibration state is read.
const CalibrationPoll = 5 * time.Second

// A plugin is less trusted than the agent (it parses outside input): what
// it reports is bounded before it joins the Status counters, which the
// server refuses beyond 256.
const (
	maxCalibrationStats = 48  // calibration counters kept (5 per feature set)
	maxCalibrationKey   = 100 // bytes of a counter name
	maxCalibrationLog   = 48  // feature sets whose last logged calibration is kept
)

// Calibration follows the calibration of one plugin (across its restarts).
// The zero value is ready; it is safe for concurrent use.
type Calibration struct {
	stats atomic.Pointer[map[string]uint64]
	mu    sync.Mutex
	bits  map[string]uint32 // local quantiles of calibrated models, by digest
	// order holds the digests of bits, least recently reported first.
	order []string
	// logged is, per feature set, the calibration last logged (samples
	// and local quantile), at most maxCalibrationLog sets.
	logged map[string]string
	// file keeps bits across agent restarts (Persist); saved is its
	// content, settings its first line.
	file, settings, saved string
	flog                  *slog.Logger
}

// calibrationFileMax bounds a calibration file read back (16 entries of
// 80 bytes and the settings line).
const calibrationFileMax = 4096

// Persist keeps c's calibrations in path across agent restarts: it loads
// the ones saved there under the same settings (the plugin's calibration
// arguments: another grace period or quantile calibrates again), and Read
// saves every change. The calibrations of a plugin restarted by the agent
// always survived (LaunchArgs); without the file, every start of the agent
// (a reboot, an upgrade, a crash) opened another silent grace period on a
// sensor whose models were calibrated long ago. A file that cannot be read
// or parsed is logged and ignored: the models calibrate again.
func (c *Calibration) Persist(path string, settings []string, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.file, c.settings, c.flog = path, strings.Join(settings, " "), log
	b, err := readCalibrationFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		log.Warn("saved calibrations unreadable: calibrating again", "file", path, "err", err)
		return
	}
	header, list, _ := strings.Cut(string(b), "\n")
	if header != c.settings {
		log.Info("calibration settings changed: calibrating again", "file", path, "saved", header, "now", c.settings)
		return
	}
	restored, err := selfcal.ParseRestored(strings.TrimSpace(list))
	if err != nil {
		log.Warn("saved calibrations malformed: calibrating again", "file", path, "err", err)
		return
	}
	if c.bits == nil {
		c.bits = map[string]uint32{}
	}
	for _, d := range slices.Sorted(maps.Keys(restored)) {
		if _, ok := c.bits[d]; !ok && len(c.order) < selfcal.MaxRestored {
			c.bits[d] = math.Float32bits(restored[d])
			c.order = append(c.order, d)
		}
	}
	c.saved = string(b)
	log.Info("calibrations restored: no grace period for these models", "file", path, "models", len(restored))
}

// readCalibrationFile reads the Persist file. Only a regular file is read,
// never through a symbolic link (save writes it by rename), at most
// calibrationFileMax bytes: a named pipe there would otherwise hold the
// pipeline's start for good. A missing file's error wraps fs.ErrNotExist.
func readCalibrationFile(path string) ([]byte, error) {
	return fsutil.ReadRegularNoFollow(path, calibrationFileMax)
}

// save writes the calibrations to the Persist file when they changed.
// c.mu is held.
func (c *Calibration) save() {
	if c.file == "" {
		return
	}
	content := c.settings + "\n" + selfcal.FormatRestored(c.bits) + "\n"
	if content == c.saved {
		return
	}
	if err := update.WriteFileAtomic(c.file, []byte(content), 0o600); err != nil {
		c.flog.Warn("calibrations not saved: the next agent start calibrates again", "err", err)
		return
	}
	c.saved = content
}

// calibrationStat tells whether a plugin Health stat reports calibration.
func calibrationStat(k string) bool {
	for _, p := range []string{selfcal.StatCalibrated, selfcal.StatLocal, selfcal.StatSamples, selfcal.StatModelThreshold, selfcal.StatThreshold} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// Poll reads the plugin's calibration state now and every `every` until ctx
// ends.
func (c *Calibration) Poll(ctx context.Context, health func(context.Context) (sdk.Health, error), every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.Read(ctx, health, log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Read reads the plugin's calibration state once and logs each new
// calibration.
func (c *Calibration) Read(ctx context.Context, health func(context.Context) (sdk.Health, error), log *slog.Logger) {
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	hl, err := health(hctx)
	if err != nil {
		return
	}
	st := map[string]uint64{}
	for k, v := range hl.Stats {
		if digest, ok := strings.CutPrefix(k, selfcal.BitsPrefix); ok {
			c.remember(digest, v)
		} else if calibrationStat(k) && len(k) <= maxCalibrationKey && len(st) < maxCalibrationStats {
			st[k] = v
		}
	}
	c.stats.Store(&st)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.save()
	if c.logged == nil {
		c.logged = map[string]string{}
	}
	for k, v := range st {
		set, ok := strings.CutPrefix(k, selfcal.StatCalibrated)
		key := fmt.Sprint(st[selfcal.StatSamples+set], "/", st[selfcal.StatLocal+set])
		last, seen := c.logged[set]
		if !ok || v != 1 || log == nil || (seen && last == key) {
			continue
		}
		if !seen && len(c.logged) >= maxCalibrationLog {
			// The plugin names the sets: forget them all rather than grow
			// (at worst a calibration is logged again).
			clear(c.logged)
		}
		c.logged[set] = key
		log.Info("per-sensor calibration done", "feature_set", set, "samples", st[selfcal.StatSamples+set],
			"local_quantile", float64(st[selfcal.StatLocal+set])/1e6,
			"model_threshold", float64(st[selfcal.StatModelThreshold+set])/1e6,
			"threshold", float64(st[selfcal.StatThreshold+set])/1e6)
	}
}

// Counters returns the last calibration state read (a copy; nil before).
func (c *Calibration) Counters() map[string]uint64 {
	if st := c.stats.Load(); st != nil {
		return maps.Clone(*st)
	}
	return nil
}

// remember keeps a calibrated model's local quantile (float32 bits) by
// digest, at most selfcal.MaxRestored: the most recently reported ones. The
// plugin reports the calibrations of the models it runs at every poll, so
// these stay, and the models it ran before (replaced by updates) are
// forgotten first; keeping the first ones instead lost the current models
// after MaxRestored updates, and a restart silenced the sensor for another
// grace period. Only what the plugin's -calibrated accepts is kept (a
// finite positive value), so a bad report cannot keep a restarted plugin
// from starting.
func (c *Calibration) remember(digest string, bits uint64) {
	if !selfcal.ValidDigest(digest) || bits > math.MaxUint32 {
		return
	}
	if v := math.Float32frombits(uint32(bits)); !(v > 0) || math.IsInf(float64(v), 0) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bits == nil {
		c.bits = map[string]uint32{}
	}
	if _, ok := c.bits[digest]; ok {
		c.order = slices.DeleteFunc(c.order, func(d string) bool { return d == digest })
	} else if len(c.order) >= selfcal.MaxRestored {
		delete(c.bits, c.order[0])
		c.order = slices.Delete(c.order, 0, 1)
	}
	c.bits[digest] = uint32(bits)
	c.order = append(c.order, digest)
}

// LaunchArgs are the plugin arguments that restore the calibrations seen so
// far (pluginhost.Config.LaunchArgs).
func (c *Calibration) LaunchArgs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bits) == 0 {
		return nil
	}
	return []string{"-calibrated", selfcal.FormatRestored(c.bits)}
}

// Calibrating tells whether plugin arguments start a calibration grace period.
func Calibrating(pluginArgs []string) bool { return hasFlag(pluginArgs, "calibrate") }

// calibrating tells whether the plugin was started with a calibration grace period.
func (p *Pipeline) calibrating() bool { return Calibrating(p.cfg.PluginArgs) }

// pollCalibration follows the plugin's calibration until ctx ends.
func (p *Pipeline) pollCalibration(ctx context.Context) {
	p.cal.Poll(ctx, func(ctx context.Context) (sdk.Health, error) { return p.host.Load().Health(ctx) }, CalibrationPoll, p.log)
}
