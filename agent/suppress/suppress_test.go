package suppress

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func TestRuleMatches(t *testing.T) {
	ctx := &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 40000, DstPort: 22, Proto: "TCP", Path: "/srv/x"}
	cases := []struct {
		name     string
		rule     Rule
		detector string
		ctx      *wirev1.FindingContext
		want     bool
	}{
		{"detector only", Rule{Detector: "netflow"}, "netflow", ctx, true},
		{"other detector", Rule{Detector: "netflow"}, "fileactivity", ctx, false},
		{"all fields", Rule{Detector: "netflow", SrcIP: "10.0.0.1", DstIP: "10.0.0.2", DstPort: 22, Proto: "tcp", Path: "/srv/x"}, "netflow", ctx, true},
		{"proto case-insensitive", Rule{Detector: "netflow", Proto: "tCp"}, "netflow", ctx, true},
		{"other port", Rule{Detector: "netflow", DstPort: 23}, "netflow", ctx, false},
		{"other src", Rule{Detector: "netflow", SrcIP: "10.0.0.9"}, "netflow", ctx, false},
		{"other path", Rule{Detector: "netflow", Path: "/srv"}, "netflow", ctx, false},
		{"nil context, rule without fields", Rule{Detector: "netflow"}, "netflow", nil, true},
		{"nil context, rule with a field", Rule{Detector: "netflow", DstPort: 22}, "netflow", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rule.Matches(c.detector, c.ctx); got != c.want {
				t.Fatalf("Matches = %v, want %v", got, c.want)
			}
		})
	}
}

// recSink records what reaches it.
type recSink struct {
	mu  sync.Mutex
	got []*wirev1.Finding
	err error
}

func (r *recSink) Append(_ context.Context, fs []*wirev1.Finding) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.got = append(r.got, fs...)
	return nil
}

func finding(detector string, port uint32) *wirev1.Finding {
	return &wirev1.Finding{Detector: detector, Context: &wirev1.FindingContext{DstIp: "10.0.0.2", DstPort: port, Proto: "tcp"}}
}

func TestFilter(t *testing.T) {
	ctx := context.Background()
	next := &recSink{}
	f := NewFilter(next, Set{})
	in := []*wirev1.Finding{finding("netflow", 22), finding("netflow", 80), finding("fileactivity", 22)}
	if err := f.Append(ctx, in); err != nil || len(next.got) != 3 || f.Suppressed() != 0 {
		t.Fatalf("empty set: %d passed, %d suppressed, %v", len(next.got), f.Suppressed(), err)
	}
	f.Replace(Set{Generation: 4, Rules: []Rule{{ID: 1, Detector: "netflow", DstPort: 22}}})
	if f.Len() != 1 || f.Generation() != 4 {
		t.Fatalf("len %d generation %d", f.Len(), f.Generation())
	}
	next.got = nil
	if err := f.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	if len(next.got) != 2 || next.got[0] != in[1] || next.got[1] != in[2] || f.Suppressed() != 1 {
		t.Fatalf("passed %v, suppressed %d", next.got, f.Suppressed())
	}
	if in[0].Detector != "netflow" || len(in) != 3 {
		t.Fatal("caller's slice modified")
	}
	// All suppressed: next is not called.
	next.got, next.err = nil, errors.New("must not be called")
	if err := f.Append(ctx, []*wirev1.Finding{finding("netflow", 22), finding("netflow", 22)}); err != nil || f.Suppressed() != 3 {
		t.Fatalf("all suppressed: %v, %d", err, f.Suppressed())
	}
	// next's error comes back.
	if err := f.Append(ctx, []*wirev1.Finding{finding("netflow", 80)}); err == nil {
		t.Fatal("next's error lost")
	}
	// Nil findings pass through (the spool decides); lifting restores delivery.
	next.err = nil
	f.Replace(Set{Generation: 5})
	if err := f.Append(ctx, []*wirev1.Finding{nil, finding("netflow", 22)}); err != nil || len(next.got) != 2 || f.Suppressed() != 3 {
		t.Fatalf("after lift: %v, %d passed", err, len(next.got))
	}
}

func TestFilterConcurrentReplace(t *testing.T) {
	f := NewFilter(&recSink{}, Set{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if i == 0 {
					f.Replace(Set{Generation: uint64(j), Rules: []Rule{{Detector: "netflow", DstPort: uint32(j % 3)}}})
					continue
				}
				_ = f.Append(context.Background(), []*wirev1.Finding{finding("netflow", uint32(j%3))})
			}
		}()
	}
	wg.Wait()
}

func TestFromWire(t *testing.T) {
	m := &wirev1.Suppressions{Generation: 9, Items: []*wirev1.Suppression{
		{Id: 3, Detector: "netflow", SrcIp: "a", DstIp: "b", DstPort: 22, Proto: "tcp", Path: "p"}, nil}}
	s, cut := FromWire(m)
	want := Set{Generation: 9, Rules: []Rule{{ID: 3, Detector: "netflow", SrcIP: "a", DstIP: "b", DstPort: 22, Proto: "tcp", Path: "p"}}}
	if cut || !reflect.DeepEqual(s, want) {
		t.Fatalf("%+v %v", s, cut)
	}
	big := &wirev1.Suppressions{Items: make([]*wirev1.Suppression, MaxRules+1)}
	for i := range big.Items {
		big.Items[i] = &wirev1.Suppression{Detector: "d"}
	}
	if s, cut := FromWire(big); !cut || len(s.Rules) != MaxRules {
		t.Fatalf("%d rules, cut %v", len(s.Rules), cut)
	}
	if s, _ := FromWire(nil); len(s.Rules) != 0 || s.Generation != 0 {
		t.Fatalf("nil: %+v", s)
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s, err := Load(path)
	if err != nil || len(s.Rules) != 0 || s.Generation != 0 {
		t.Fatalf("missing file: %+v %v", s, err)
	}
	want := Set{Generation: 12, Rules: []Rule{{ID: 1, Detector: "netflow", DstIP: "10.0.0.2", DstPort: 22, Proto: "tcp"},
		{ID: 2, Detector: "fileactivity", Path: "/srv/ü"}}}
	if err := Save(path, want, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	// Replacing leaves no temporary files behind.
	if err := Save(path, Set{Generation: 13}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries", len(ents))
	}
	if got, err := Load(path); err != nil || len(got.Rules) != 0 || got.Generation != 13 {
		t.Fatalf("empty set: %+v %v", got, err)
	}
	// A write into a missing directory fails cleanly.
	if err := Save(filepath.Join(dir, "nope", FileName), want, time.Now()); err == nil {
		t.Fatal("save into a missing directory succeeded")
	}
}

func TestParseRefuses(t *testing.T) {
	many := `{"version":1,"rules":[` + strings.Repeat(`{"detector":"d"},`, MaxRules) + `{"detector":"d"}]}`
	for name, data := range map[string]string{
		"empty":       "",
		"not json":    "suppressions",
		"array":       "[]",
		"no version":  `{"generation":1,"rules":[]}`,
		"version 2":   `{"version":2,"rules":[]}`,
		"bad rule":    `{"version":1,"rules":[{"dst_port":-1}]}`,
		"too many":    many,
		"trailing":    `{"version":1,"rules":[]} {}`,
		"port string": `{"version":1,"rules":[{"detector":"d","dst_port":"22"}]}`,
	} {
		if _, err := Parse([]byte(data)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Parse(make([]byte, MaxFileSize+1)); err == nil {
		t.Error("oversized file accepted")
	}
}

func TestKeeper(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	log := slog.New(slog.DiscardHandler)
	next := &recSink{}
	k := Open(path, next, log)
	if k.Len() != 0 {
		t.Fatal("rules from nowhere")
	}
	k.Update(&wirev1.Suppressions{Generation: 2, Items: []*wirev1.Suppression{{Id: 1, Detector: "netflow", DstPort: 22}}})
	_ = k.Append(context.Background(), []*wirev1.Finding{finding("netflow", 22), finding("netflow", 80)})
	if len(next.got) != 1 || k.Suppressed() != 1 {
		t.Fatalf("passed %d, suppressed %d", len(next.got), k.Suppressed())
	}
	// A restart applies the kept set before any server contact.
	k2 := Open(path, next, log)
	if k2.Len() != 1 || k2.Generation() != 2 {
		t.Fatalf("reloaded: %d rules, generation %d", k2.Len(), k2.Generation())
	}
	// The server's (empty) set replaces it, on disk too.
	k2.Update(&wirev1.Suppressions{Generation: 3})
	if s, err := Load(path); err != nil || len(s.Rules) != 0 || s.Generation != 3 {
		t.Fatalf("after lift: %+v %v", s, err)
	}
	// A corrupt file: start empty, do not fail.
	if err := os.WriteFile(path, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k3 := Open(path, next, log); k3.Len() != 0 {
		t.Fatal("rules from a corrupt file")
	}
}
