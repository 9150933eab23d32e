package netflow

import (
	"context"
	"log/slog"
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	nhfeat "github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// hostBundle trains a small nethost model of feature set name (nethost/v1,
// v2, v3, v4, v5 or v6) on the benign packets of pkts (those not from the
// scanner) and writes it as a bundle; manifestDim overrides the manifest's
// dimension when > 0 (a bundle that lies about it).
func hostBundle(t *testing.T, pkts []event.Packet, name string, manifestDim int) string {
	t.Helper()
	ex := nhfeat.New(nhfeat.Config{HashSeed: 1, V2: name == nhfeat.NameV2, V3: name == nhfeat.NameV3, V4: name == nhfeat.NameV4, V5: name == nhfeat.NameV5, V6: name == nhfeat.NameV6, V7: name == nhfeat.NameV7})
	dim := ex.Dim()
	scanner := netip.MustParseAddr("10.99.66.6")
	var rows []float32
	v := make([]float32, dim)
	for i := range pkts {
		if pkts[i].SrcAddr() == scanner {
			continue
		}
		ex.Extract(&pkts[i], v)
		rows = append(rows, v...)
	}
	data := ae.Matrix{Data: rows, Rows: len(rows) / dim, Cols: dim}
	m, err := ae.Fit(context.Background(), data, ae.Config{Kind: ae.KindSingle, HiddenRatio: 0.5, Norm: ae.NormMinMax,
		Train: ae.TrainConfig{Epochs: 2, Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	model, err := train.Export(m, bundle.QuantInt8Static, data)
	if err != nil {
		t.Fatal(err)
	}
	if manifestDim <= 0 {
		manifestDim = dim
	}
	man := bundle.Manifest{Name: "nethost-" + strings.ReplaceAll(name, "/", "-"), Detector: Name, Version: 1,
		FeatureSet: name, Dim: manifestDim, Quantization: bundle.QuantInt8Static,
		Created: time.Now().Add(-time.Hour), Expires: time.Now().Add(time.Hour)}
	p, err := train.Build(t.TempDir(), model, man, calib.Metrics{Threshold: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNethostVersions: the per-source slot takes a nethost/v7, v6, v5, v4, v3, v2 or v1
// bundle, each replacing another with its own extractor and
// feature names, with and without score reuse; a bundle whose manifest
// gives the other version's dimension is refused and the active model
// stays.
func TestNethostVersions(t *testing.T) {
	lib := ortLib(t)
	pkts := scanPackets(t)
	v1 := hostBundle(t, pkts, nhfeat.Name, 0)
	v2 := hostBundle(t, pkts, nhfeat.NameV2, 0)
	v3 := hostBundle(t, pkts, nhfeat.NameV3, 0)
	v4 := hostBundle(t, pkts, nhfeat.NameV4, 0)
	v5 := hostBundle(t, pkts, nhfeat.NameV5, 0)
	v6 := hostBundle(t, pkts, nhfeat.NameV6, 0)
	v7 := hostBundle(t, pkts, nhfeat.NameV7, 0)
	lying := hostBundle(t, pkts, nhfeat.Name, nhfeat.DimV2)
	shipped, _ := filepath.Glob("../../models/baseline/nethost-*.vgb")
	for _, noReuse := range []bool{false, true} {
		d := New(slog.New(slog.DiscardHandler), Options{ORTLib: lib, HashSeed: 1, NoReuse: noReuse})
		bundles := []struct {
			path, set string
			dim       int
		}{{v2, nhfeat.NameV2, nhfeat.DimV2}, {v1, nhfeat.Name, nhfeat.Dim}, {v3, nhfeat.NameV3, nhfeat.DimV3},
			{v4, nhfeat.NameV4, nhfeat.DimV4}, {v2, nhfeat.NameV2, nhfeat.DimV2}, {v3, nhfeat.NameV3, nhfeat.DimV3},
			{v4, nhfeat.NameV4, nhfeat.DimV4}, {v5, nhfeat.NameV5, nhfeat.DimV5}, {v6, nhfeat.NameV6, nhfeat.DimV6}, {v7, nhfeat.NameV7, nhfeat.DimV7},
			{v4, nhfeat.NameV4, nhfeat.DimV4}}
		if len(shipped) == 1 {
			bi, err := bundle.Read(shipped[0], bundle.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			bundles = append(bundles, struct {
				path, set string
				dim       int
			}{shipped[0], bi.Manifest.FeatureSet, bi.Manifest.Dim})
		}
		for _, b := range bundles {
			info, err := d.LoadModel(context.Background(), b.path)
			if err != nil {
				t.Fatalf("load %s: %v", b.set, err)
			}
			if info.FeatureSet != b.set || d.nh.Name() != b.set || d.dims[slotNethost] != b.dim {
				t.Fatalf("after loading %s: info %s, extractor %s, dim %d", b.set, info.FeatureSet, d.nh.Name(), d.dims[slotNethost])
			}
			var anomalies int
			for off := 0; off < len(pkts); off += 1000 {
				res, err := d.ScorePackets(context.Background(), pkts[off:min(off+1000, len(pkts))])
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range res.Scores {
					if math.IsNaN(float64(s)) || s < 0 {
						t.Fatalf("%s: score %v", b.set, s)
					}
				}
				for _, a := range res.Anomalies {
					anomalies++
					if got := a.Context[ContextFeatureSet]; got != b.set {
						t.Fatalf("anomaly of feature set %q, want %q", got, b.set)
					}
					if len(a.TopFeatures) == 0 || !strings.HasPrefix(a.TopFeatures[0].Name, "host_") && !strings.HasPrefix(a.TopFeatures[0].Name, "sensor_") {
						t.Fatalf("%s: top features %v", b.set, a.TopFeatures)
					}
				}
			}
			if anomalies == 0 {
				t.Errorf("%s (reuse off: %v): no anomaly in a capture with a SYN scan", b.set, noReuse)
			}
			h := d.Health(context.Background())
			if _, ok := h.Stats["threshold_micro_"+b.set]; !ok {
				t.Errorf("health stats %v lack %s's threshold", h.Stats, b.set)
			}
		}
		if _, err := d.LoadModel(context.Background(), lying); err == nil || !strings.Contains(err.Error(), "dimension") {
			t.Fatalf("bundle of nethost/v1 claiming dim %d: err %v", nhfeat.DimV2, err)
		}
		last := bundles[len(bundles)-1].set
		if m := d.models[slotNethost].Load(); m == nil || m.info.FeatureSet != last || d.nh.Name() != last {
			t.Fatalf("active model changed by a refused bundle")
		}
		_ = d.Close()
	}
}
