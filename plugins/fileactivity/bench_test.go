package fileactivity

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// BenchmarkScoreFilesBurst scores batches of 256 small source files created
// at 20,000 per second of event time in one tree (what the live benchmark's
// writer produces): features, the int8 model and the anomalies, which in such
// a burst are nearly every event. Reported per event.
func BenchmarkScoreFilesBurst(b *testing.B) {
	lib := ortLib(b)
	d := New(nil, Options{ORTLib: lib})
	defer d.Close()
	if _, err := d.LoadModel(context.Background(), baseline(b)); err != nil {
		b.Fatal(err)
	}
	const batch = 256
	evs := make([]event.File, batch)
	for i := range evs {
		evs[i] = event.File{Op: event.FileCreate, Root: "/bench", Path: "/bench/" + strconv.Itoa(i/50) + "/" + strconv.Itoa(i) + ".go",
			Size: 58, Mode: 0o644, Flags: event.FileFlagSampled, SampleLen: 58, Magic: event.MagicText,
			ExtMagic: event.MagicText, Entropy: 4.5, PrintableFrac: 1, ChiSquare: 3000}
	}
	ts := int64(1e9)
	var anomalies int
	b.ResetTimer()
	for n := 0; n < b.N; n += batch {
		for i := range evs {
			ts += int64(50 * time.Microsecond)
			evs[i].TimeNs = ts
		}
		res, err := d.ScoreFiles(context.Background(), evs)
		if err != nil {
			b.Fatal(err)
		}
		anomalies += len(res.Anomalies)
	}
	b.ReportMetric(float64(anomalies)/float64(b.N), "anomalies/event")
}
