package app

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// DemoGenerator is a TEST/DEMO source: it appends synthetic findings
// (detector "demo") at a fixed rate until the real detectors are wired in.
// It never runs unless asked for (--demo-findings or demo.rate).
type DemoGenerator struct {
	rate float64
	log  *slog.Logger
	rnd  *rand.Rand
	made atomic.Uint64
}

var (
	_ pipeline.Source   = (*DemoGenerator)(nil)
	_ pipeline.Counters = (*DemoGenerator)(nil)
)

// NewDemoGenerator makes a generator of rate findings per second.
func NewDemoGenerator(rate float64, log *slog.Logger) *DemoGenerator {
	return &DemoGenerator{rate: rate, log: log, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
}

// Name implements pipeline.Source.
func (g *DemoGenerator) Name() string { return "demo-generator" }

// Counters implements pipeline.Counters.
func (g *DemoGenerator) Counters() map[string]uint64 {
	return map[string]uint64{"demo_findings_generated": g.made.Load()}
}

// Run appends findings at the configured rate (in ticks of 100 ms or
// slower) until ctx ends.
func (g *DemoGenerator) Run(ctx context.Context, sink pipeline.Sink) error {
	g.log.Warn("DEMO finding generator active: synthetic findings, not detections", "rate_per_s", g.rate)
	tick := 100 * time.Millisecond
	if per := time.Duration(float64(time.Second) / g.rate); per > tick {
		tick = per
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	var made uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			due := uint64(now.Sub(start).Seconds() * g.rate)
			n := int(min(due-made, 10000))
			if due <= made || n == 0 {
				continue
			}
			batch := make([]*wirev1.Finding, n)
			for i := range batch {
				batch[i] = g.finding(now)
			}
			if err := sink.Append(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("demo generator: %w", err)
			}
			made += uint64(n)
			g.made.Add(uint64(n))
		}
	}
}

var demoFeatures = []string{"syn_ratio", "dst_port_entropy", "flows_per_s", "bytes_per_pkt", "rst_ratio", "distinct_dst"}

func (g *DemoGenerator) finding(now time.Time) *wirev1.Finding {
	r := g.rnd
	sev := wirev1.Severity_SEVERITY_LOW
	switch p := r.Float64(); {
	case p < 0.03:
		sev = wirev1.Severity_SEVERITY_CRITICAL
	case p < 0.15:
		sev = wirev1.Severity_SEVERITY_HIGH
	case p < 0.40:
		sev = wirev1.Severity_SEVERITY_MEDIUM
	}
	threshold := 0.5
	score := threshold + r.Float64()*float64(sev)
	src := fmt.Sprintf("10.%d.%d.%d", r.IntN(4), r.IntN(256), 1+r.IntN(254))
	dst := fmt.Sprintf("192.168.%d.%d", r.IntN(4), 1+r.IntN(254))
	dport := []uint32{22, 80, 443, 445, 3389, 8080}[r.IntN(6)]
	count := uint64(1 + r.IntN(20))
	first := now.Add(-time.Duration(r.IntN(30_000)) * time.Millisecond)
	top := make([]*wirev1.FeatureContribution, 3)
	rest := 1.0
	for i := range top {
		c := rest * (0.4 + 0.3*r.Float64())
		rest -= c
		top[i] = &wirev1.FeatureContribution{Name: demoFeatures[r.IntN(len(demoFeatures))], Contribution: c}
	}
	return &wirev1.Finding{
		Detector:          "demo",
		TimeUnixNano:      now.UnixNano(),
		FirstSeenUnixNano: first.UnixNano(),
		LastSeenUnixNano:  now.UnixNano(),
		Count:             count,
		Severity:          sev,
		Score:             score,
		Threshold:         threshold,
		Model:             &wirev1.ModelRef{Name: "demo", Version: 1, Detector: "demo", Digest: "sha256:" + fmt.Sprintf("%064x", 0)},
		Context:           &wirev1.FindingContext{SrcIp: src, DstIp: dst, SrcPort: uint32(1024 + r.IntN(60000)), DstPort: dport, Proto: "tcp"},
		TopFeatures:       top,
		Summary:           fmt.Sprintf("DEMO synthetic finding: %d unusual flows %s -> %s:%d", count, src, dst, dport),
		Packets:           count * uint64(1+r.IntN(10)),
		Bytes:             count * uint64(60+r.IntN(1400)),
	}
}
