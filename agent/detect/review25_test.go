package detect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestDrainKeepsFindingsTheSinkRefused: drain took the pending findings,
// and when the sink refused them they were gone. Run's loop drains with the
// run's context, so at shutdown a tick that raced the cancellation handed
// the spool a cancelled context (spool.Append refuses it) and lost the
// findings of that tick; the final drain, with a fresh context, then had
// nothing left to append. A refused batch now stays pending for the next
// drain.
func TestDrainKeepsFindingsTheSinkRefused(t *testing.T) {
	p := &Pipeline{}
	p.queue([]*wirev1.Finding{{Detector: DetectorName, Count: 1}, {Detector: DetectorName, Count: 2}})
	refuse := errors.New("context canceled")
	var got []*wirev1.Finding
	sink := sinkFunc(func(ctx context.Context, fs []*wirev1.Finding) error {
		if err := ctx.Err(); err != nil {
			return refuse
		}
		got = append(got, fs...)
		return nil
	})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.drain(cancelled, sink); !errors.Is(err, refuse) {
		t.Fatalf("drain into a refusing sink: %v, want its error", err)
	}
	p.queue([]*wirev1.Finding{{Detector: DetectorName, Count: 3}})
	if err := p.drain(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Count != 1 || got[1].Count != 2 || got[2].Count != 3 {
		var counts []uint64
		for _, f := range got {
			counts = append(counts, f.Count)
		}
		t.Fatalf("findings appended after a refused drain: counts %v, want [1 2 3] (in order)", counts)
	}
}

type sinkFunc func(ctx context.Context, fs []*wirev1.Finding) error

func (f sinkFunc) Append(ctx context.Context, fs []*wirev1.Finding) error { return f(ctx, fs) }

// TestCalibrationPersist: the calibrations a plugin reports are saved
// (0600) and restored by the next agent start under the same settings, so
// that a reboot opens no new silent grace period; other settings, a
// malformed or oversized file calibrate again.
func TestCalibrationPersist(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calibration-netflow")
	settings := []string{"-calibrate", "10m0s", "-calibrate-quantile", "0.999"}
	d := fmt.Sprintf("sha256:%064x", 7)
	health := func(context.Context) (sdk.Health, error) {
		return sdk.Health{Stats: map[string]uint64{"calibrated_nethost/v6": 1, selfcal.BitsPrefix + d: 0x3db9b9b9}}, nil
	}
	log := slog.New(slog.DiscardHandler)

	var first Calibration
	first.Persist(path, settings, log) // no file yet
	if got := first.LaunchArgs(); got != nil {
		t.Fatalf("launch args before any calibration: %q", got)
	}
	first.Read(context.Background(), health, log)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("calibration not saved: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("calibration file mode %v", st.Mode().Perm())
	}
	want := []string{"-calibrated", d + "=3db9b9b9"}

	var again Calibration // the next agent start
	again.Persist(path, settings, log)
	if got := again.LaunchArgs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored launch args %q, want %q", got, want)
	}
	var other Calibration // another quantile: calibrate again
	other.Persist(path, []string{"-calibrate", "10m0s", "-calibrate-quantile", "0.99"}, log)
	if got := other.LaunchArgs(); got != nil {
		t.Fatalf("restored under other settings: %q", got)
	}
	for name, content := range map[string]string{
		"malformed":      strings.Join(settings, " ") + "\nsha256:zz=1\n",
		"oversized":      strings.Join(settings, " ") + "\n" + strings.Repeat("x", calibrationFileMax),
		"not a quantile": strings.Join(settings, " ") + "\n" + d + "=7fc00000\n", // NaN
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		var c Calibration
		c.Persist(path, settings, log)
		if got := c.LaunchArgs(); got != nil {
			t.Fatalf("%s file restored %q", name, got)
		}
	}
}
