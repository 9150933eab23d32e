// Package selfcal is the plugin side of per-sensor calibration (issue 4,
// DESIGN.md section 6): for a grace period of event time a detector observes
// the local traffic without raising anomalies, keeping a bounded sample of
// each model's scores; then the model's threshold becomes the larger of its
// own and the sample's quantile. Detector plugins (plugins/netflow,
// plugins/fileactivity) keep the per-model state; this package has what they
// share: the sample, the Health stats the agent reads and forwards to the
// server, and the -calibrated argument with which the agent gives a
// restarted plugin back the calibrations of its predecessor.
package selfcal

import (
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-edge/vigil/models/calib"
)

// MaxSample bounds a sample (256 kB of scores per model; a 0.999 quantile
// still has 65 scores above it).
const MaxSample = 1 << 16

// Sample is a bounded, evenly spaced sample of one model's scores over its
// grace period: every stride-th score is kept; when the buffer is full,
// every other kept score is dropped and the stride doubles. The zero value
// is empty, ready after Reset.
type Sample struct {
	start  int64 // event time of the first observed batch
	seen   uint64
	stride uint64
	scores []float32
}

// Release empties s and frees its buffer (after a calibration).
func (s *Sample) Release() { *s = Sample{} }

// Reset empties s (keeping its buffer) for a grace period starting at start.
func (s *Sample) Reset(start int64) {
	*s = Sample{start: start, stride: 1, scores: s.scores[:0]}
}

// Start is the event time the grace period started at.
func (s *Sample) Start() int64 { return s.start }

// Len is the number of scores kept.
func (s *Sample) Len() int { return len(s.scores) }

// Add offers scores, in stream order.
func (s *Sample) Add(scores []float32) {
	if s.stride == 0 {
		s.stride = 1
	}
	for _, v := range scores {
		if v != v {
			v = float32(math.Inf(1)) // NaN: the most anomalous, as the detectors judge it
		}
		if s.seen%s.stride == 0 {
			if len(s.scores) == MaxSample {
				for i := range MaxSample / 2 {
					s.scores[i] = s.scores[2*i]
				}
				s.scores = s.scores[:MaxSample/2]
				s.stride *= 2
				if s.seen%s.stride != 0 {
					s.seen++
					continue
				}
			}
			s.scores = append(s.scores, v)
		}
		s.seen++
	}
}

// Quantile is the q-quantile of the kept scores; ok is false when there are
// none or the quantile is not finite (NaN scores count as +Inf).
func (s *Sample) Quantile(q float64) (v float32, ok bool) {
	x, err := calib.Quantile(s.scores, q)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, false
	}
	return float32(x), true
}

// Finish ends a grace period: the q-quantile of the kept scores (ok as for
// Quantile) and how many were kept; the buffer is freed.
func (s *Sample) Finish(q float64) (local float32, n int, ok bool) {
	local, ok = s.Quantile(q)
	n = s.Len()
	s.Release()
	return local, n, ok
}

// Cut returns the index of the first event, by event time ts(i) of n
// events, that lies grace or more after start (n if none does).
func Cut(n int, ts func(int) int64, start, grace int64) int {
	for i := range n {
		if ts(i)-start >= grace {
			return i
		}
	}
	return n
}

// State is what a detector reports about the calibration of one model.
type State struct {
	FeatureSet, Digest string
	// Model is the bundle's threshold, Active the one in use.
	Model, Active float32
	// Calibrated is false while the model observes; Local is the sample's
	// quantile and Samples its size (0 for a restored calibration).
	Calibrated bool
	Local      float32
	Samples    int
}

// Health stat names (×1e6 for thresholds), per feature set.
const (
	StatCalibrated     = "calibrated_"
	StatModelThreshold = "model_threshold_micro_"
	StatThreshold      = "threshold_micro_"
	StatLocal          = "calibration_local_micro_"
	StatSamples        = "calibration_samples_"
	// BitsPrefix carries a calibrated model's local quantile exactly
	// (float32 bits), keyed by bundle digest: what the agent passes back
	// with -calibrated. The agent does not forward it to the server.
	BitsPrefix = "calibrated_bits_"
)

// Report writes st into Health stats.
func Report(stats map[string]uint64, st State) {
	set := st.FeatureSet
	stats[StatCalibrated+set] = 0
	if st.Calibrated {
		stats[StatCalibrated+set] = 1
	}
	stats[StatModelThreshold+set] = micro(st.Model)
	stats[StatThreshold+set] = micro(st.Active)
	if st.Calibrated {
		stats[StatSamples+set] = uint64(st.Samples)
		stats[StatLocal+set] = micro(st.Local)
		stats[BitsPrefix+st.Digest] = uint64(math.Float32bits(st.Local))
	}
}

func micro(v float32) uint64 {
	if !(v > 0) || math.IsInf(float64(v), 0) {
		return 0
	}
	return uint64(float64(v) * 1e6)
}

// MaxRestored bounds the -calibrated list (one entry per model a plugin ran).
const MaxRestored = 16

// ParseRestored parses -calibrated: "DIGEST=BITS,..." with DIGEST a bundle
// digest ("sha256:" and 64 lowercase hex digits) and BITS the local
// quantile's float32 bits in hex (8 digits), a finite positive value.
func ParseRestored(s string) (map[string]float32, error) {
	out := map[string]float32{}
	if s == "" {
		return out, nil
	}
	items := strings.Split(s, ",")
	if len(items) > MaxRestored {
		return nil, fmt.Errorf("%d entries, at most %d", len(items), MaxRestored)
	}
	for _, it := range items {
		digest, bits, ok := strings.Cut(it, "=")
		if !ok || !ValidDigest(digest) {
			return nil, fmt.Errorf("entry %q: want sha256:<64 hex>=<8 hex>", it)
		}
		b, err := strconv.ParseUint(bits, 16, 32)
		if err != nil || len(bits) != 8 {
			return nil, fmt.Errorf("entry %q: bits %q: want 8 hex digits", it, bits)
		}
		v := math.Float32frombits(uint32(b))
		if err := CheckLocal(v); err != nil {
			return nil, fmt.Errorf("entry %q: %w", it, err)
		}
		if _, dup := out[digest]; dup {
			return nil, fmt.Errorf("entry %q: digest given twice", it)
		}
		out[digest] = v
	}
	return out, nil
}

// FormatRestored is the -calibrated value of the calibrations given (local
// quantiles as float32 bits, by digest), sorted; "" for none.
func FormatRestored(bits map[string]uint32) string {
	items := make([]string, 0, len(bits))
	for d, b := range bits {
		items = append(items, fmt.Sprintf("%s=%08x", d, b))
	}
	slices.Sort(items)
	return strings.Join(items, ",")
}

// ValidDigest accepts "sha256:" and 64 lowercase hex digits.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	return ok && len(h) == 64 && strings.Trim(h, "0123456789abcdef") == ""
}

// CheckLocal checks a calibrated local quantile that a detector is given
// rather than computes (Options.Calibrated, from the agent's -calibrated):
// it becomes a threshold, so it must be a finite positive number (NaN would
// disable the threshold's comparison, +Inf flag nothing, 0 everything).
func CheckLocal(v float32) error {
	if !(v > 0) || math.IsInf(float64(v), 0) {
		return fmt.Errorf("calibrated quantile %v: want a finite positive value", v)
	}
	return nil
}

// Restore is the threshold a model runs with when the sensor's calibration
// v, kept by an earlier instance of the plugin (Options.Calibrated, from the
// agent's -calibrated), is restored for it: the larger of the model's
// threshold and v. ok is false, with a warning logged, when v is unusable
// (CheckLocal): the model then observes again.
func Restore(log *slog.Logger, featureSet, digest string, modelThr, v float32) (thr float32, ok bool) {
	if err := CheckLocal(v); err != nil {
		log.Warn("per-sensor calibration not restored (calibrating again)", "feature_set", featureSet, "digest", digest, "err", err)
		return modelThr, false
	}
	thr = max(modelThr, v)
	log.Info("per-sensor calibration restored", "feature_set", featureSet, "local", v, "threshold", thr)
	return thr, true
}
