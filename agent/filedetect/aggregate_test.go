package filedetect

import (
	"encoding/json"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func anomaly(root, path, op, kind string, ts time.Duration, ratio float32, extra map[string]string) *sdk.Anomaly {
	c := map[string]string{
		ctxTimeNs: strconv.FormatInt(int64(ts), 10), ctxRoot: root, sdk.ContextPath: path, ctxOp: op, ctxKind: kind,
		ctxModel: "fileactivity", ctxModelVersion: "1", ctxModelDigest: "sha256:00",
	}
	for k, v := range extra {
		c[k] = v
	}
	return &sdk.Anomaly{Score: ratio, Threshold: 1, Context: c,
		TopFeatures: []sdk.Contribution{{Name: "rate1s_ext_change_renames", Contribution: 0.5}}}
}

func TestAggregator(t *testing.T) {
	ransom := func(a *Aggregator) {
		for i := range 300 {
			kind := "burst"
			if i < 5 {
				kind = "file"
			}
			a.Add(anomaly("/srv/share", fmt.Sprintf("/srv/share/docs/d%d/f%d.txt.locked", i%3, i), "rename", kind,
				time.Duration(i)*25*time.Millisecond, 2, map[string]string{ctxExtChanged: "1", ctxHighEntropy: "1", ctxEntropy: "7.99"}))
		}
	}
	tests := []struct {
		name    string
		feed    func(a *Aggregator)
		want    int
		summary string
		path    string
		sev     wirev1.Severity
	}{
		{"ransomware burst", ransom, 1, "300 files renamed to .locked with high-entropy content under /srv/share/docs in 7.5 s", "/srv/share/docs", wirev1.Severity_SEVERITY_HIGH},
		{"wiper burst", func(a *Aggregator) {
			for i := range 50 {
				a.Add(anomaly("/srv/www", fmt.Sprintf("/srv/www/f%d", i), "remove", "burst", time.Duration(i)*time.Millisecond, 1.2, nil))
			}
		}, 1, "50 files deleted under /srv/www in 49 ms", "/srv/www", wirev1.Severity_SEVERITY_MEDIUM},
		{"overwrite wiper burst", func(a *Aggregator) {
			for i := range 120 {
				extra := map[string]string{ctxMagic: "unknown", ctxEntropy: "0.00"}
				if i%4 == 0 {
					extra = map[string]string{ctxMagic: "empty", ctxEntropy: "0.00"}
				}
				a.Add(anomaly("/srv/share", fmt.Sprintf("/srv/share/docs/f%d.docx", i), "write", "burst", time.Duration(i)*10*time.Millisecond, 30, extra))
			}
			// Text written by an ordinary save is not counted as wiped.
			a.Add(anomaly("/srv/share", "/srv/share/docs/notes.txt", "write", "burst", 1300*time.Millisecond, 2, map[string]string{ctxMagic: "text", ctxEntropy: "4.70"}))
		}, 1, "120 files overwritten with constant bytes or emptied under /srv/share/docs in 1.3 s", "/srv/share/docs", wirev1.Severity_SEVERITY_CRITICAL},
		{"packed file", func(a *Aggregator) {
			a.Add(anomaly("/srv/www", "/srv/www/bin/helper", "create", "file", time.Second, 4, map[string]string{ctxMagic: "elf", ctxEntropy: "7.61"}))
			a.Add(anomaly("/srv/www", "/srv/www/bin/helper", "write", "file", 2*time.Second, 3, nil))
		}, 1, "Anomalous file /srv/www/bin/helper (elf, entropy 7.61, create)", "/srv/www/bin/helper", wirev1.Severity_SEVERITY_HIGH},
		{"packed file during a burst is reported on its own", func(a *Aggregator) {
			ransom(a)
			a.Add(anomaly("/srv/share", "/srv/share/drop/x.bin", "create", "file", 8*time.Second, 500, map[string]string{ctxMagic: "elf"}))
		}, 2, "300 files renamed to .locked", "/srv/share", wirev1.Severity_SEVERITY_HIGH},
		{"weak file anomaly suppressed", func(a *Aggregator) {
			a.Add(anomaly("/srv/www", "/srv/www/x.txt", "create", "file", time.Second, 1.1, nil))
		}, 0, "", "", 0},
		{"few burst anomalies suppressed", func(a *Aggregator) {
			for i := range 10 {
				a.Add(anomaly("/srv/www", fmt.Sprintf("/srv/www/f%d", i), "rename", "burst", time.Duration(i)*time.Millisecond, 5, nil))
			}
		}, 0, "", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAggregator(AggregatorConfig{EventTime: true})
			tc.feed(a)
			got := a.Flush()
			if len(got) != tc.want {
				t.Fatalf("%d findings, want %d: %v", len(got), tc.want, got)
			}
			if tc.want == 0 {
				if a.Stats().Suppressed == 0 {
					t.Error("suppressed anomalies not counted")
				}
				return
			}
			f := got[0]
			if !strings.HasPrefix(f.Summary, tc.summary) {
				t.Errorf("summary %q, want prefix %q", f.Summary, tc.summary)
			}
			if f.Context.GetPath() != tc.path || f.Severity != tc.sev || f.Detector != DetectorName || len(f.TopFeatures) == 0 {
				t.Errorf("finding %+v", f)
			}
		})
	}
}

// TestAggregatorLive: a burst is emitted FirstAfter after it qualified and
// updated while it grows; a file finding waits Hold and is absorbed by a
// burst that starts meanwhile.
func TestAggregatorLive(t *testing.T) {
	now := time.Unix(1000, 0)
	a := NewAggregator(AggregatorConfig{UpdateEvery: 5 * time.Second, FirstAfter: time.Second, Hold: 2 * time.Second, Now: func() time.Time { return now }})
	a.Add(anomaly("/t", "/t/a.bin", "create", "file", 0, 3, nil))
	if got := a.Tick(0); len(got) != 0 {
		t.Fatalf("file finding before Hold: %v", got)
	}
	for i := range 25 {
		a.Add(anomaly("/t", fmt.Sprintf("/t/f%d", i), "remove", "burst", time.Duration(i)*time.Millisecond, 2, nil))
	}
	now = now.Add(1500 * time.Millisecond)
	got := a.Tick(0)
	if len(got) != 1 || !strings.Contains(got[0].Summary, "25 files deleted") {
		t.Fatalf("first burst emission: %v", got)
	}
	now = now.Add(3 * time.Second)
	if got := a.Tick(0); len(got) != 0 {
		t.Fatalf("unchanged burst re-emitted or file not absorbed: %v", got)
	}
	a.Add(anomaly("/t", "/t/g", "remove", "burst", 30*time.Millisecond, 2, nil))
	now = now.Add(5 * time.Second)
	if got := a.Tick(0); len(got) != 1 || got[0].Count != 27 {
		t.Fatalf("update: %v", got)
	}
	if got := a.Flush(); len(got) != 0 {
		t.Fatalf("flush re-emitted: %v", got)
	}
}

func TestCommonDir(t *testing.T) {
	for _, c := range [][3]string{
		{"/a/b/c", "/a/b/d", "/a/b"}, {"/a", "/b", "/"}, {"/a/b", "/a/b", "/a/b"}, {"/a/b/c", "/a/b", "/a/b"},
	} {
		if got := commonDir(c[0], c[1]); got != c[2] {
			t.Errorf("commonDir(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

// TestAggregatorSlimBurst: burst anomalies as the plugin sends them in a
// burst (kind and flags only; path, time and operation from the agent's
// event; top features and the model only on the strongest of a call) make
// the same finding as full ones.
func TestAggregatorSlimBurst(t *testing.T) {
	a := NewAggregator(AggregatorConfig{EventTime: true})
	for i := range 300 {
		ev := &event.File{TimeNs: int64(i) * int64(25*time.Millisecond), Op: event.FileRename, Root: "/srv/share",
			Path: fmt.Sprintf("/srv/share/docs/d%d/f%d.txt.locked", i%3, i), OldPath: fmt.Sprintf("/srv/share/docs/d%d/f%d.txt", i%3, i),
			Flags: event.FileFlagSampled, Magic: event.MagicUnknown, Entropy: 7.99}
		an := &sdk.Anomaly{Index: uint64(i), Score: 2, Threshold: 1,
			Context: map[string]string{ctxKind: kindBurst, ctxExtChanged: "1", ctxHighEntropy: "1"}}
		if i%100 == 50 { // the strongest of its call: full context
			an.Score = 3
			an.Context = anomaly("/srv/share", ev.Path, "rename", kindBurst, time.Duration(ev.TimeNs), 3,
				map[string]string{ctxExtChanged: "1", ctxHighEntropy: "1"}).Context
			an.TopFeatures = []sdk.Contribution{{Name: "rate1s_ext_change_renames", Contribution: 0.5}}
		}
		a.AddEvent(an, ev)
	}
	// A slim anomaly whose event has an unsafe name.
	a.AddEvent(&sdk.Anomaly{Score: 1.5, Threshold: 1, Context: map[string]string{ctxKind: kindBurst}},
		&event.File{TimeNs: int64(7600 * time.Millisecond), Op: event.FileRemove, Root: "/srv/share", Path: "/srv/share/docs/x\n\xff"})
	got := a.Flush()
	if len(got) != 1 {
		t.Fatalf("%d findings: %v", len(got), got)
	}
	f := got[0]
	want := "300 files renamed to .locked with high-entropy content under /srv/share/docs in 7.6 s"
	if !strings.HasPrefix(f.Summary, want) || f.Count != 301 || f.Context.GetPath() != "/srv/share/docs" {
		t.Errorf("finding %q count %d path %q", f.Summary, f.Count, f.Context.GetPath())
	}
	if len(f.TopFeatures) == 0 || f.Model.GetName() != "fileactivity" || f.Model.GetVersion() != 1 || f.Score != 3 {
		t.Errorf("finding top %v model %v score %v", f.TopFeatures, f.Model, f.Score)
	}
	if !utf8.ValidString(f.Summary) {
		t.Errorf("summary not valid UTF-8: %q", f.Summary)
	}
}

// commonDirSplit is the original (allocating) commonDir, the reference.
func commonDirSplit(a, b string) string {
	if a == b {
		return a
	}
	pa, pb := strings.Split(a, "/"), strings.Split(b, "/")
	i := 0
	for i < len(pa) && i < len(pb) && pa[i] == pb[i] {
		i++
	}
	d := strings.Join(pa[:i], "/")
	if d == "" && strings.HasPrefix(a, "/") {
		return "/"
	}
	return d
}

func FuzzCommonDir(f *testing.F) {
	for _, c := range [][2]string{{"/a/b/c", "/a/b/d"}, {"/a", "/b"}, {"/a/", "/a/b"}, {"/ab", "/a"}, {"a/b", "a/c"}, {"/", "/x"}, {"", "/"}, {"/", ""}, {"./0/0", ""}} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := commonDir(a, b), commonDirSplit(a, b); got != want {
			t.Fatalf("commonDir(%q, %q) = %q, want %q", a, b, got, want)
		}
		if got, want := parentDir(a), path.Dir(a); got != want {
			t.Fatalf("parentDir(%q) = %q, want %q", a, got, want)
		}
	})
}

// TestAggregatorLongPaths: findings about very long paths (escaped names
// grow up to fourfold) stay within the protocol's limits, which the server
// enforces by refusing the whole batch: a file finding's summary keeps what
// happened and both file names, and paths are cut on a UTF-8 boundary.
func TestAggregatorLongPaths(t *testing.T) {
	dir := "/srv/share/" + strings.Repeat(event.SafePath("d\xff\xfeé/"), 200) // 2,411 bytes
	long := dir + strings.Repeat("x", 2000) + ".exe"                          // 4,415 bytes
	old := dir + strings.Repeat("y", 2000) + ".txt"
	file := NewAggregator(AggregatorConfig{EventTime: true})
	an := anomaly("/srv/share", long, "rename", "file", time.Second, 4, map[string]string{ctxOldPath: old, ctxMagic: "pe", ctxEntropy: "7.90"})
	an.TopFeatures = []sdk.Contribution{{Name: "exec_section_entropy", Contribution: 0.9}}
	file.Add(an)
	burst := NewAggregator(AggregatorConfig{EventTime: true})
	for i := range 60 {
		burst.Add(anomaly("/srv/share", fmt.Sprintf("%s/f%d.locked", long, i), "remove", "burst", time.Duration(i)*time.Millisecond, 2, nil))
	}
	got := append(file.Flush(), burst.Flush()...)
	if len(got) != 2 {
		t.Fatalf("%d findings, want a file and a burst finding", len(got))
	}
	for _, f := range got {
		if n := len(f.Summary); n > wirev1.MaxSummaryLen || !utf8.ValidString(f.Summary) {
			t.Errorf("summary of %d bytes (limit %d), valid UTF-8 %v", n, wirev1.MaxSummaryLen, utf8.ValidString(f.Summary))
		}
		if p := f.Context.GetPath(); len(p) > wirev1.MaxPathLen || !utf8.ValidString(p) || !strings.HasPrefix(p, "/srv/share/d") {
			t.Errorf("context path of %d bytes (limit %d)", len(p), wirev1.MaxPathLen)
		}
	}
	for _, want := range []string{"Anomalous file /srv/share/", "xxx.exe (pe, entropy 7.90, renamed from /srv/share/",
		"yyy.txt): executable code looks packed or encrypted"} {
		if !strings.Contains(got[0].Summary, want) {
			t.Errorf("file summary lacks %q:\n%s", want, got[0].Summary)
		}
	}
	if want := "60 files deleted under /srv/share/"; !strings.HasPrefix(got[1].Summary, want) || !strings.Contains(got[1].Summary, "xxx.exe in ") {
		t.Errorf("burst summary:\n%s", got[1].Summary)
	}
}

// TestAggregatorNonFiniteScore checks that a file anomaly with an infinite score (the
// fileactivity plugin sends a NaN score as +Inf) and a NaN contribution gives a finding with
// finite numbers, which the server accepts and encoding/json can write.
func TestAggregatorNonFiniteScore(t *testing.T) {
	a := NewAggregator(AggregatorConfig{EventTime: true})
	an := anomaly("/srv/share", "/srv/share/a.bin", "write", "file", time.Second, 4, nil)
	an.Score = float32(math.Inf(1))
	an.TopFeatures = []sdk.Contribution{{Name: "write_entropy", Contribution: float32(math.NaN())}}
	a.Add(an)
	got := a.Flush()
	if len(got) != 1 {
		t.Fatalf("%d findings, want 1", len(got))
	}
	f := got[0]
	if f.Score != wirev1.MaxScore || len(f.TopFeatures) != 1 || f.TopFeatures[0].Contribution != wirev1.MaxScore {
		t.Errorf("score %g, top features %v: want %g", f.Score, f.TopFeatures, wirev1.MaxScore)
	}
	if _, err := json.Marshal(f); err != nil {
		t.Errorf("finding does not encode as JSON: %v", err)
	}
}
