package fileactivity

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

var update = flag.Bool("update", false, "rewrite testdata/script.golden")

var magicByName = func() map[string]event.Magic {
	m := map[string]event.Magic{}
	for i := event.Magic(0); i < event.MagicEnd; i++ {
		m[i.String()] = i
	}
	return m
}()

var opByName = map[string]event.FileOp{"create": event.FileCreate, "write": event.FileWrite, "rename": event.FileRename,
	"remove": event.FileRemove, "chmod": event.FileChmod}

var flagByName = map[string]uint16{"sampled": event.FileFlagSampled, "dir": event.FileFlagDir, "mismatch": event.FileFlagMagicMismatch,
	"exec": event.FileFlagExecutable, "parsed": event.FileFlagExecParsed, "broken": event.FileFlagExecBroken, "headtail": event.FileFlagHeadTail}

var execFlagByName = map[string]uint8{"elf": event.ExecELF, "pe": event.ExecPE, "wx": event.ExecWX, "entry": event.ExecEntryOutside, "nosym": event.ExecNoSymbols}

// parseLine reads "TIME_MS OP key=value ..." into an event.
func parseLine(t *testing.T, line string) event.File {
	t.Helper()
	fs := strings.Fields(line)
	ms, err := strconv.ParseFloat(fs[0], 64)
	if err != nil {
		t.Fatalf("time in %q: %v", line, err)
	}
	ev := event.File{TimeNs: int64(ms * 1e6), Op: opByName[fs[1]], Size: -1}
	if ev.Op == 0 {
		t.Fatalf("op in %q", line)
	}
	for _, kv := range fs[2:] {
		k, v, _ := strings.Cut(kv, "=")
		num := func() float64 {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s in %q: %v", k, line, err)
			}
			return f
		}
		switch k {
		case "root":
			ev.Root = v
		case "path":
			ev.Path = v
		case "old":
			ev.OldPath = v
		case "size":
			ev.Size = int64(num())
		case "flags":
			for _, n := range strings.Split(v, ",") {
				if flagByName[n] == 0 {
					t.Fatalf("flag %q", n)
				}
				ev.Flags |= flagByName[n]
			}
		case "execflags":
			for _, n := range strings.Split(v, ",") {
				if execFlagByName[n] == 0 {
					t.Fatalf("exec flag %q", n)
				}
				ev.ExecFlags |= execFlagByName[n]
			}
		case "magic":
			m, ok := magicByName[v]
			if !ok {
				t.Fatalf("magic %q", v)
			}
			ev.Magic = m
		case "entropy":
			ev.Entropy = float32(num())
		case "printable":
			ev.PrintableFrac = float32(num())
		case "zero":
			ev.ZeroFrac = float32(num())
		case "high":
			ev.HighFrac = float32(num())
		case "chi2":
			ev.ChiSquare = float32(num())
		case "b64":
			ev.Base64Frac = float32(num())
		case "sample":
			ev.SampleLen = uint32(num())
		case "writes":
			ev.Writes = uint32(num())
		case "sections":
			ev.Sections = uint16(num())
		case "imports":
			ev.Imports = uint32(num())
		case "libs":
			ev.Libraries = uint16(num())
		case "xent":
			ev.ExecSectionEntropy = float32(num())
		case "maxent":
			ev.MaxSectionEntropy = float32(num())
		default:
			t.Fatalf("key %q in %q", k, line)
		}
	}
	return ev
}

// script reads testdata/script.txt, expanding "repeat" lines.
func script(t *testing.T) (evs []event.File, labels []string) {
	t.Helper()
	f, err := os.Open("testdata/script.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "repeat "); ok {
			fs := strings.SplitN(rest, " ", 4)
			count, _ := strconv.Atoi(fs[0])
			step, _ := strconv.ParseFloat(fs[1], 64)
			t0, _ := strconv.ParseFloat(fs[2], 64)
			for i := 0; i < count; i++ {
				l := strconv.FormatFloat(t0+float64(i)*step, 'f', -1, 64) + " " + strings.ReplaceAll(fs[3], "{i}", strconv.Itoa(i))
				evs = append(evs, parseLine(t, l))
				labels = append(labels, fmt.Sprintf("line %d #%d", n, i))
			}
			continue
		}
		evs = append(evs, parseLine(t, line))
		labels = append(labels, fmt.Sprintf("line %d", n))
	}
	return evs, labels
}

func TestNames(t *testing.T) {
	names := Names()
	if len(names) != Dim {
		t.Fatalf("%d names, Dim %d", len(names), Dim)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] {
			t.Fatalf("empty or duplicate name %q", n)
		}
		seen[n] = true
	}
	if names[Dim-1] != "rate60s_high_entropy_share" || names[nEvent] != "rate1s_events" {
		t.Fatalf("order: %q %q", names[nEvent], names[Dim-1])
	}
}

func TestGolden(t *testing.T) {
	evs, labels := script(t)
	x := NewExtractor()
	v := make([]float32, Dim)
	var b strings.Builder
	names := Names()
	for i := range evs {
		x.Extract(&evs[i], v)
		fmt.Fprintf(&b, "%s %s %s\n", labels[i], evs[i].Op, evs[i].Path)
		for j, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) || f < 0 || f > 1.5 {
				t.Fatalf("%s: feature %s = %v out of range", labels[i], names[j], f)
			}
			if f != 0 {
				fmt.Fprintf(&b, "  %s=%.5g\n", names[j], f)
			}
		}
	}
	got := b.String()
	if *update {
		if err := os.WriteFile("testdata/script.golden", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("testdata/script.golden")
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < min(len(gl), len(wl)); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("golden mismatch at line %d:\n got  %s\n want %s\n(run go test -update if the change is intended; a change of the vector is a new feature-set version)", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("golden mismatch: %d lines vs %d", len(gl), len(wl))
	}
}

// vectorAt runs the script and returns the vector after the event whose
// label starts with label.
func vectors(t *testing.T) (map[string][]float32, []string) {
	evs, labels := script(t)
	x := NewExtractor()
	m := map[string][]float32{}
	for i := range evs {
		v := make([]float32, Dim)
		x.Extract(&evs[i], v)
		m[labels[i]] = v
	}
	return m, labels
}

func idx(t *testing.T, name string) int {
	for i, n := range Names() {
		if n == name {
			return i
		}
	}
	t.Fatalf("no feature %q", name)
	return -1
}

func TestScriptSemantics(t *testing.T) {
	m, _ := vectors(t)
	get := func(label, name string) float32 { return m[label][idx(t, name)] }
	// Droppers.
	if get("line 16", "exec_section_entropy") < 0.99 || get("line 16", "exec_no_sections") != 1 || get("line 16", "exec_wx") != 1 {
		t.Fatal("packed ELF indicators")
	}
	if get("line 17", "magic_mismatch") != 1 || get("line 17", "magic_exec") != 1 {
		t.Fatal("ELF named .txt")
	}
	if get("line 18", "packed_script") < 0.99 {
		t.Fatal("gzexe-like script")
	}
	if get("line 19", "base64_frac") < 0.9 {
		t.Fatal("base64 script")
	}
	// Ransomware burst: the share's rates climb, the web root's do not.
	burstEnd := "line 22 #39"
	for _, n := range []string{"rate1s_renames", "rate1s_ext_change_renames", "rate10s_high_entropy", "rate1s_high_entropy_share"} {
		var w float32 // the benign web workload's highest value
		for _, l := range []string{"line 8", "line 9", "line 10", "line 11", "line 12", "line 13"} {
			w = max(w, get(l, n))
		}
		if b := get(burstEnd, n); b < 3*w || b-w < 0.2 {
			t.Errorf("%s: burst %v vs benign %v", n, b, w)
		}
	}
	if get(burstEnd, "rate1s_high_entropy_share") < 0.9 {
		t.Errorf("high-entropy share %v", get(burstEnd, "rate1s_high_entropy_share"))
	}
	if get("line 23 #29", "rate1s_removes") < 0.25 {
		t.Errorf("wiper removes %v", get("line 23 #29", "rate1s_removes"))
	}
	// The web root a minute later is unaffected by the share's burst.
	if get("line 26", "rate10s_renames") > 0.001 || get("line 26", "rate1s_high_entropy") != 0 {
		t.Error("trees are not separated")
	}
	// Only the first .locked is a new extension.
	if get("line 22 #0", "ext_new") != 1 || get("line 22 #1", "ext_new") != 0 {
		t.Error("ext_new")
	}
}

func TestDecayAndOrder(t *testing.T) {
	x := NewExtractor()
	v := make([]float32, Dim)
	ev := event.File{Op: event.FileRemove, Root: "/r", Path: "/r/a"}
	for i := 0; i < 100; i++ {
		ev.TimeNs = int64(i) * 1e6
		x.Extract(&ev, v)
	}
	hot := v[idx(t, "rate1s_removes")]
	ev.TimeNs = 30e9 // 30 s later: the 1 s window has forgotten, the 60 s one not
	x.Extract(&ev, v)
	if v[idx(t, "rate1s_removes")] >= hot/4 || v[idx(t, "rate60s_removes")] < 0.3 {
		t.Fatalf("decay: 1s %v (was %v), 60s %v", v[idx(t, "rate1s_removes")], hot, v[idx(t, "rate60s_removes")])
	}
	// An event from the past neither decays nor breaks anything.
	ev.TimeNs = 1
	x.Extract(&ev, v)
	for _, f := range v {
		if math.IsNaN(float64(f)) || f < 0 {
			t.Fatal("bad value after out-of-order event")
		}
	}
}

func TestBoundedTrees(t *testing.T) {
	x := NewExtractor()
	v := make([]float32, Dim)
	for i := 0; i < 3*MaxTrees; i++ {
		ev := event.File{TimeNs: int64(i), Op: event.FileCreate, Root: fmt.Sprintf("/t%d", i), Path: fmt.Sprintf("/t%d/x.e%d", i, i)}
		x.Extract(&ev, v)
	}
	if x.Trees() != MaxTrees || len(x.index) != MaxTrees {
		t.Fatalf("trees %d index %d", x.Trees(), len(x.index))
	}
	// Extension sets are bounded too.
	for i := 0; i < 1000; i++ {
		ev := event.File{TimeNs: 1e12, Op: event.FileCreate, Root: "/big", Path: fmt.Sprintf("/big/f.x%d", i)}
		x.Extract(&ev, v)
		if v[idx(t, "ext_new")] != 1 {
			t.Fatal("unseen extension not new")
		}
	}
	x.Reset()
	if x.Trees() != 0 {
		t.Fatal("reset")
	}
}

func TestDeterministic(t *testing.T) {
	evs, _ := script(t)
	run := func() []float32 {
		x := NewExtractor()
		out := make([]float32, 0, len(evs)*Dim)
		v := make([]float32, Dim)
		for i := range evs {
			x.Extract(&evs[i], v)
			out = append(out, v...)
		}
		return out
	}
	a, b := run(), run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("value %d differs between runs", i)
		}
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(int64(0), uint8(1), uint16(0), float32(0), "/r", "/r/a.txt", "")
	f.Add(int64(-5), uint8(3), uint16(0xffff), float32(math.NaN()), "", "", "/x.y")
	f.Fuzz(func(t *testing.T, ns int64, op uint8, flags uint16, ent float32, root, p, old string) {
		x := NewExtractor()
		v := make([]float32, Dim)
		ev := event.File{TimeNs: ns, Op: event.FileOp(op), Flags: flags, Entropy: ent, ChiSquare: ent, HighFrac: ent,
			SampleLen: uint32(ns), Root: root, Path: p, OldPath: old, Size: ns}
		x.Extract(&ev, v)
		x.Extract(&ev, v)
		for i, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				t.Fatalf("feature %d = %v", i, f)
			}
		}
	})
}

func BenchmarkExtract(b *testing.B) {
	x := NewExtractor()
	v := make([]float32, Dim)
	ev := event.File{Op: event.FileWrite, Flags: event.FileFlagSampled, Magic: event.MagicText, Entropy: 4.5, PrintableFrac: 1,
		ChiSquare: 1e6, SampleLen: 4096, Root: "/srv/www", Path: "/srv/www/a/b/index.html", Size: 4096}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ev.TimeNs = int64(i) * 50_000
		x.Extract(&ev, v)
	}
}
