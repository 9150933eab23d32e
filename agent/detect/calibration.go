package detect

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Per-sensor calibration (issue 4): with Config.PluginArgs carrying
// -calibrate, the netflow plugin observes local traffic for that grace period
// without anomalies, then raises each model's threshold to the local score
// quantile (plugins/netflow). The pipeline polls the plugin's Health and
// forwards what it says about calibration in Counters, which the agent sends
// to the server in every Status: per feature set, calibrated_<set> (0 while
// the model observes, 1 after), the model's own and the active threshold
// (model_threshold_micro_<set>, threshold_micro_<set>, ×1e6), the local
// quantile and its sample size (calibration_local_micro_<set>,
// calibration_samples_<set>).

// calibrationPoll is how often the plugin's calibration state is read.
const calibrationPoll = 5 * time.Second

// calibratedBitsPrefix is the plugin's Health stat of a calibrated model's
// local quantile by bundle digest (float32 bits; plugins/netflow
// CalibratedBitsPrefix, not imported: the agent core has no cgo). The
// pipeline keeps these and passes them to a restarted plugin
// (-calibrated DIGEST=BITS,...), so that a crash does not open another
// silent grace period; they are not forwarded to the server.
const calibratedBitsPrefix = "calibrated_bits_"

// maxCalibrated bounds the models remembered (the plugin's limit).
const maxCalibrated = 16

// calibrationStat tells whether a plugin Health stat reports calibration.
func calibrationStat(k string) bool {
	for _, p := range []string{"calibrated_", "calibration_", "model_threshold_micro_", "threshold_micro_"} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// calibrating tells whether the plugin was started with a calibration grace period.
func (p *Pipeline) calibrating() bool { return hasFlag(p.cfg.PluginArgs, "calibrate") }

// pollCalibration reads the plugin's calibration state every calibrationPoll
// until ctx ends, and logs each model's calibration once.
func (p *Pipeline) pollCalibration(ctx context.Context) {
	t := time.NewTicker(calibrationPoll)
	defer t.Stop()
	logged := map[string]bool{}
	for {
		p.readCalibration(ctx, logged)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Pipeline) readCalibration(ctx context.Context, logged map[string]bool) {
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	hl, err := p.host.Load().Health(hctx)
	if err != nil {
		return
	}
	st := map[string]uint64{}
	for k, v := range hl.Stats {
		if digest, ok := strings.CutPrefix(k, calibratedBitsPrefix); ok {
			p.rememberCalibrated(digest, v)
		} else if calibrationStat(k) {
			st[k] = v
		}
	}
	p.calStats.Store(&st)
	for k, v := range st {
		set, ok := strings.CutPrefix(k, "calibrated_")
		key := fmt.Sprint(set, "/", st["calibration_samples_"+set], "/", st["calibration_local_micro_"+set])
		if !ok || v != 1 || logged[key] {
			continue
		}
		logged[key] = true
		p.log.Info("per-sensor calibration done", "feature_set", set, "samples", st["calibration_samples_"+set],
			"local_quantile", float64(st["calibration_local_micro_"+set])/1e6,
			"model_threshold", float64(st["model_threshold_micro_"+set])/1e6,
			"threshold", float64(st["threshold_micro_"+set])/1e6)
	}
}

// calibrationCounters returns the last calibration state read (a copy).
func (p *Pipeline) calibrationCounters() map[string]uint64 {
	if st := p.calStats.Load(); st != nil {
		return maps.Clone(*st)
	}
	return nil
}

// rememberCalibrated keeps a calibrated model's local quantile (float32
// bits) by digest, at most maxCalibrated (the first ones are kept).
func (p *Pipeline) rememberCalibrated(digest string, bits uint64) {
	if !validDigest(digest) || bits == 0 || bits > math.MaxUint32 {
		return
	}
	p.calMu.Lock()
	defer p.calMu.Unlock()
	if p.calibrated == nil {
		p.calibrated = map[string]uint32{}
	}
	if _, ok := p.calibrated[digest]; ok || len(p.calibrated) < maxCalibrated {
		p.calibrated[digest] = uint32(bits)
	}
}

// calibratedArgs are the plugin arguments that restore the calibrations
// seen so far (pluginhost.Config.LaunchArgs).
func (p *Pipeline) calibratedArgs() []string {
	p.calMu.Lock()
	defer p.calMu.Unlock()
	if len(p.calibrated) == 0 {
		return nil
	}
	items := make([]string, 0, len(p.calibrated))
	for d, b := range p.calibrated {
		items = append(items, fmt.Sprintf("%s=%08x", d, b))
	}
	slices.Sort(items)
	return []string{"-calibrated", strings.Join(items, ",")}
}

// validDigest accepts "sha256:" and 64 lowercase hex digits.
func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	return ok && len(h) == 64 && strings.Trim(h, "0123456789abcdef") == ""
}
