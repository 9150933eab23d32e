package example

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/agent/pluginhost/pluginhosttest"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

func TestScorePackets(t *testing.T) {
	d := New(slog.New(slog.DiscardHandler), Options{})
	pkts := sdktest.SynthPackets(300) // SYN+FIN at 0, 97, 194, 291
	res, err := d.ScorePackets(context.Background(), pkts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Anomalies) != 4 || len(res.Scores) != len(pkts) {
		t.Fatalf("%d anomalies, %d scores", len(res.Anomalies), len(res.Scores))
	}
	for i, a := range res.Anomalies {
		if a.Index != uint64(97*i) || a.Score != 1 || a.Threshold != 0.5 {
			t.Errorf("anomaly %d: %+v", i, a)
		}
		if a.Context[sdk.ContextProto] != "tcp" || a.Context[sdk.ContextDstIP] != "192.168.1.1" {
			t.Errorf("anomaly %d context %v", i, a.Context)
		}
	}
	if res, _ := New(nil, Options{Noop: true}).ScorePackets(context.Background(), pkts); len(res.Anomalies) != 0 {
		t.Error("noop detector reported anomalies")
	}
}

func TestLoadModel(t *testing.T) {
	d := New(slog.New(slog.DiscardHandler), Options{})
	ctx := context.Background()
	m, err := d.LoadModel(ctx, filepath.Join("testdata", "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "example-synfin" || m.Version != 3 || m.Threshold != 0.5 || len(m.Digest) != len("sha256:")+64 {
		t.Fatalf("model %+v", m)
	}
	for _, bad := range []string{"testdata/missing.json", "testdata", "example.go"} {
		if _, err := d.LoadModel(ctx, bad); err == nil {
			t.Errorf("LoadModel(%s) succeeded", bad)
		}
	}
	if got := d.Health(ctx).Model; got != m {
		t.Fatalf("model after failed loads %+v, want %+v", got, m)
	}
	pkts := []event.Packet{{Proto: event.ProtoTCP, TCPFlags: event.TCPSyn | event.TCPFin}}
	res, _ := d.ScorePackets(ctx, pkts)
	if len(res.Anomalies) != 1 || res.Anomalies[0].Score != 0.9 {
		t.Fatalf("result with loaded model %+v", res)
	}
}

// TestConformance builds the example plugin and runs the SDK conformance
// harness on it through the agent's real plugin host (VIGIL_E2E=1). The test
// (not the plugin) imports the agent's host adapter.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	if !sdktest.Enabled() {
		t.Skipf("conformance starts the plugin binary: set %s=1 to run it", sdktest.E2EEnv)
	}
	bin := sdktest.BuildPlugin(t, "github.com/vigil-edge/vigil/plugins/example/cmd/vigil-detector-example")
	sdktest.Run(t, bin, sdktest.Options{
		NewHost:   pluginhosttest.NewHost,
		ModelPath: filepath.Join("testdata", "model.json"),
	})
}
