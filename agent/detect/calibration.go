package detect

import (
	"context"
	"fmt"
	"maps"
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
		if calibrationStat(k) {
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
