package sdk_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/ring"
)

func TestComputeStats(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 3, 10, 99, 100, 101, 1000, 4096} {
		scores := make([]float32, n)
		for i := range scores {
			scores[i] = float32(rng.IntN(50)) // many ties
		}
		st, _ := sdk.ComputeStats(scores, 3, nil)
		sorted := slices.Clone(scores)
		slices.Sort(sorted)
		rank := func(q float64) float32 { return sorted[max(int(math.Ceil(q*float64(n)))-1, 0)] }
		want := sdk.Stats{Count: uint64(n), Anomalies: 3, P50: rank(0.5), P90: rank(0.9), P99: rank(0.99), Max: sorted[n-1]}
		if st != want {
			t.Errorf("n=%d: %+v, want %+v", n, st, want)
		}
	}
	st, _ := sdk.ComputeStats([]float32{1, float32(math.NaN()), 2}, 0, nil)
	if !math.IsInf(float64(st.Max), 1) {
		t.Errorf("NaN not counted as +Inf: %+v", st)
	}
	if st, _ := sdk.ComputeStats(nil, 0, nil); st != (sdk.Stats{}) {
		t.Errorf("empty: %+v", st)
	}
}

// fakeDetector flags packets with TTL 1; it panics on TTL 255 and fails on
// TTL 254; it reports an out-of-range anomaly index when asked (TTL 253).
type fakeDetector struct {
	model atomic.Pointer[sdk.ModelInfo]
}

func (f *fakeDetector) Info() sdk.Info {
	return sdk.Info{Name: "fake", Version: "1", EventKind: sdk.EventPacket, FeatureSets: []string{"fake/v1"}, Dim: 1}
}

func (f *fakeDetector) LoadModel(_ context.Context, path string) (sdk.ModelInfo, error) {
	if path != "good" {
		return sdk.ModelInfo{}, errors.New("bad bundle")
	}
	m := sdk.ModelInfo{Name: "m", Version: 2, Digest: "sha256:00", FeatureSet: "fake/v1", Threshold: 0.5}
	f.model.Store(&m)
	return m, nil
}

func (f *fakeDetector) ScorePackets(_ context.Context, pkts []event.Packet) (sdk.Result, error) {
	var res sdk.Result
	res.Scores = make([]float32, len(pkts))
	for i, p := range pkts {
		switch p.TTL {
		case 255:
			panic("crafted record")
		case 254:
			return sdk.Result{}, errors.New("cannot score")
		case 253:
			res.Anomalies = append(res.Anomalies, sdk.Anomaly{Index: uint64(len(pkts) + 5)})
		case 1:
			res.Scores[i] = 1
			res.Anomalies = append(res.Anomalies, sdk.Anomaly{Index: uint64(i), Score: 1, Threshold: 0.5,
				TopFeatures: []sdk.Contribution{{Name: "ttl", Contribution: 1}}, Context: map[string]string{"proto": "tcp"}})
		}
	}
	return res, nil
}

func (f *fakeDetector) Health(context.Context) sdk.Health {
	h := sdk.Health{OK: true, Stats: map[string]uint64{"x": 1}}
	if m := f.model.Load(); m != nil {
		h.Model = *m
	}
	return h
}

// fakeFileDetector flags files whose path ends in ".exe".
type fakeFileDetector struct{ fakeDetector }

func (f *fakeFileDetector) ScoreFiles(_ context.Context, files []event.File) (sdk.Result, error) {
	var res sdk.Result
	for i, fe := range files {
		if strings.HasSuffix(fe.Path, ".exe") {
			res.Anomalies = append(res.Anomalies, sdk.Anomaly{Index: uint64(i), Score: 1, Context: map[string]string{sdk.ContextPath: fe.Path}})
		}
	}
	return res, nil
}

func TestScoreFiles(t *testing.T) {
	c := newClientFor(t, &fakeFileDetector{})
	ctx := context.Background()
	res, err := c.ScoreFiles(ctx, []event.File{{Op: event.FileCreate, Path: "/a.txt"}, {Op: event.FileWrite, Path: "/b.exe"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Count != 2 || len(res.Anomalies) != 1 || res.Anomalies[0].Index != 1 || res.Anomalies[0].Context[sdk.ContextPath] != "/b.exe" {
		t.Fatalf("ScoreFiles = %+v", res)
	}
	for _, b := range []sdk.RawBatch{
		{LayoutVersion: event.FileLayoutVersion, Data: []byte("garbage")},
		{LayoutVersion: 99, Data: nil},
	} {
		if _, err := c.ScoreRaw(ctx, sdk.EventFile, b); err == nil {
			t.Errorf("ScoreRaw(file, %+v) succeeded", b)
		}
	}
}

func newClient(t *testing.T) *sdk.Client { return newClientFor(t, &fakeDetector{}) }

func newClientFor(t *testing.T, d sdk.Detector) *sdk.Client {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	c, _ := plugin.TestPluginGRPCConn(t, false, sdk.PluginMap(d, log))
	t.Cleanup(func() { _ = c.Close() })
	raw, err := c.Dispense(sdk.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*sdk.Client)
}

func TestUnaryRPCs(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	in, err := c.Info(ctx)
	if err != nil || in.Name != "fake" || in.EventKind != sdk.EventPacket || in.RingLayoutVersion != ring.LayoutVersion {
		t.Fatalf("Info = %+v, %v", in, err)
	}
	if _, err := c.LoadModel(ctx, "bad"); err == nil {
		t.Fatal("bad LoadModel succeeded")
	}
	if _, err := c.LoadModel(ctx, ""); err == nil {
		t.Fatal("empty LoadModel succeeded")
	}
	m, err := c.LoadModel(ctx, "good")
	if err != nil || m.Version != 2 {
		t.Fatalf("LoadModel = %+v, %v", m, err)
	}
	pkts := make([]event.Packet, 10)
	pkts[3].TTL = 1
	pkts[9].TTL = 253
	res, err := c.ScorePackets(ctx, pkts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Anomalies) != 1 || res.Anomalies[0].Index != 3 || res.Anomalies[0].TopFeatures[0].Name != "ttl" ||
		res.Stats.Count != 10 || res.Stats.Max != 1 {
		t.Fatalf("Score = %+v", res)
	}
	pkts[5].TTL = 255
	if _, err := c.ScorePackets(ctx, pkts); err == nil {
		t.Fatal("panicking detector: no error")
	}
	if res, err := c.ScorePackets(ctx, nil); err != nil || res.Stats.Count != 0 {
		t.Fatalf("empty Score = %+v, %v", res, err)
	}
	for _, b := range []sdk.RawBatch{
		{LayoutVersion: 1, RecordSize: 64, Data: make([]byte, 65)},
		{LayoutVersion: 2, RecordSize: 64, Data: make([]byte, 64)},
		{LayoutVersion: 1, RecordSize: 32, Data: make([]byte, 64)},
	} {
		if _, err := c.ScoreRaw(ctx, sdk.EventPacket, b); err == nil {
			t.Errorf("ScoreRaw(%d/%d/%d bytes) succeeded", b.LayoutVersion, b.RecordSize, len(b.Data))
		}
	}
	if _, err := c.ScoreFiles(ctx, []event.File{{Path: "/x"}}); err == nil {
		t.Error("file batch to a packet-only detector succeeded")
	}
	h, err := c.Health(ctx)
	if err != nil || !h.OK || h.Model != m || h.Stats["x"] != 1 || h.Stats["sdk_panics"] != 1 {
		t.Fatalf("Health = %+v, %v", h, err)
	}
}

func dupFile(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestConsume runs the ring path in one process: the server side attaches
// to duplicated descriptors exactly as a plugin attaches to fds 3 and 4.
func TestConsume(t *testing.T) {
	c := newClient(t)
	r, err := ring.Create(256, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	prod, err := ring.NewProducer(r, pw)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.CloseWake()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, _, err := c.Consume(ctx, sdk.ConsumeConfig{RingFD: 1, WakeFD: 4}); err == nil {
		t.Fatal("Consume with fd 1 succeeded")
	}
	stream, tail, err := c.Consume(ctx, sdk.ConsumeConfig{RingFD: dupFile(t, r.File()), WakeFD: dupFile(t, pr), MaxBatch: 64, MaxDelay: time.Millisecond})
	if err != nil || tail != 1000 {
		t.Fatalf("Consume = %d, %v", tail, err)
	}
	if _, _, err := c.Consume(ctx, sdk.ConsumeConfig{RingFD: dupFile(t, r.File()), WakeFD: dupFile(t, pr)}); err == nil {
		t.Fatal("second Consume succeeded")
	}
	pkts := make([]event.Packet, 1000)
	pkts[10].TTL = 1
	pkts[700].TTL = 1
	pkts[500].TTL = 254 // that batch fails
	pkts[900].TTL = 255 // that batch panics
	pkts[950].TTL = 253 // bogus index, dropped
	if n, err := prod.Push(ctx, pkts, nil); err != nil || n != len(pkts) {
		t.Fatalf("Push = %d, %v", n, err)
	}
	prod.Close()
	var got, failed uint64
	var anomalies []uint64
	next := uint64(1000)
	for {
		br, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if br.Start != next || br.End-br.Start > 64 || br.Stats.Count != br.End-br.Start {
			t.Fatalf("batch [%d, %d) count %d, want start %d", br.Start, br.End, br.Stats.Count, next)
		}
		next = br.End
		got += br.End - br.Start
		if br.Err != "" {
			failed++
		}
		for _, a := range br.Anomalies {
			anomalies = append(anomalies, a.Index)
		}
	}
	if got != 1000 || r.Tail() != 2000 {
		t.Fatalf("consumed %d, tail %d", got, r.Tail())
	}
	if failed != 2 || !slices.Equal(anomalies, []uint64{1010, 1700}) {
		t.Fatalf("failed batches %d, anomalies %v", failed, anomalies)
	}
}

func TestPluginLoggerShape(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	sdk.NewPluginLogger(f, slog.LevelInfo).Warn("hello", "k", 1)
	b, _ := os.ReadFile(f.Name())
	for _, want := range []string{`"@level":"warn"`, `"@message":"hello"`, `"@timestamp":"`, `"k":1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("log line %s lacks %s", b, want)
		}
	}
}
