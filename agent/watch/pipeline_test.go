package watch_test

// End-to-end through the real watcher and the fileactivity/v1 feature set:
// what the detector will see for a ransomware burst, a benign workload and
// dropped packed or obfuscated files.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"debug/elf"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/models/features/fileactivity"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

type sink struct {
	mu    sync.Mutex
	evs   []event.File
	n     int                    // events received
	creat int                    // creates received
	keep  func(*event.File) bool // nil: keep all
}

func (s *sink) snapshot() []event.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.File(nil), s.evs...)
}

func (s *sink) wait(t testing.TB, what string, pred func([]event.File) bool) []event.File {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		evs := s.snapshot()
		if pred(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%d events)", what, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startWatch(t testing.TB, cfg watch.Config) (*watch.Watcher, *sink) {
	t.Helper()
	return startWatchKeep(t, cfg, nil)
}

func startWatchKeep(t testing.TB, cfg watch.Config, keep func(*event.File) bool) (*watch.Watcher, *sink) {
	t.Helper()
	w, err := watch.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []event.File, 1024)
	s := &sink{keep: keep}
	done := make(chan struct{})
	go func() {
		for b := range out {
			s.mu.Lock()
			for i := range b {
				s.n++
				if b[i].Op == event.FileCreate {
					s.creat++
				}
				if s.keep == nil || s.keep(&b[i]) {
					s.evs = append(s.evs, b[i])
				}
			}
			s.mu.Unlock()
		}
		close(done)
	}()
	go func() { _ = w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, s
}

func hasPath(p string) func([]event.File) bool {
	return func(evs []event.File) bool {
		for _, e := range evs {
			if e.Path == p && e.Flags&event.FileFlagSampled != 0 {
				return true
			}
		}
		return false
	}
}

// seedTree writes n ordinary documents (text of varying content) into dir.
func seedTree(t testing.TB, dir string, n int) []string {
	var paths []string
	exts := []string{".txt", ".md", ".csv", ".html", ".go"}
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%10))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(sub, fmt.Sprintf("doc%03d%s", i, exts[i%len(exts)]))
		body := strings.Repeat(fmt.Sprintf("record %d: the quarterly figures for team %d look fine.\n", i, i%7), 40+i%50)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// maxFeatures runs the extractor over evs (in order) and returns the maximum
// of every feature.
func maxFeatures(evs []event.File) []float32 {
	x := fileactivity.NewExtractor()
	v := make([]float32, fileactivity.Dim)
	m := make([]float32, fileactivity.Dim)
	for i := range evs {
		x.Extract(&evs[i], v)
		for j := range v {
			m[j] = max(m[j], v[j])
		}
	}
	return m
}

func feature(t testing.TB, name string) int {
	for i, n := range fileactivity.Names() {
		if n == name {
			return i
		}
	}
	t.Fatalf("no feature %s", name)
	return 0
}

func TestRansomwareVersusBenign(t *testing.T) {
	const n = 300
	// Benign: edits, log appends and new documents in one tree.
	benignRoot := t.TempDir()
	paths := seedTree(t, benignRoot, n)
	_, bs := startWatch(t, watch.Config{Roots: []string{benignRoot}})
	for i, p := range paths[:60] {
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprintf("edited line %d\n", i), 30)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, _ := os.OpenFile(filepath.Join(benignRoot, "app.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	for i := 0; i < 500; i++ {
		fmt.Fprintf(logf, "2026-01-01T00:00:%02d INFO request %d served in %d ms\n", i%60, i, i%17)
	}
	logf.Close()
	for i := 0; i < 20; i++ {
		os.WriteFile(filepath.Join(benignRoot, fmt.Sprintf("new%02d.md", i)), []byte("# notes\nsome new text\n"), 0o644)
	}
	// An editor's atomic save: write a temp file, rename it over the original.
	tmp := paths[0] + ".swp"
	os.WriteFile(tmp, []byte("saved by an editor\n"), 0o644)
	os.Rename(tmp, paths[0])
	os.WriteFile(filepath.Join(benignRoot, "marker"), []byte("m"), 0o644)
	benign := bs.wait(t, "benign marker", hasPath(filepath.Join(benignRoot, "marker")))

	// Ransomware: AES-CTR encrypt every file in place, rename to .locked.
	ransomRoot := t.TempDir()
	paths = seedTree(t, ransomRoot, n)
	_, rs := startWatch(t, watch.Config{Roots: []string{ransomRoot}})
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{0x42}, 32))
	for _, p := range paths {
		plain, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		iv := make([]byte, 16)
		rand.Read(iv)
		enc := make([]byte, len(plain))
		cipher.NewCTR(blk, iv).XORKeyStream(enc, plain)
		if err := os.WriteFile(p, append(iv, enc...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p, p+".locked"); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(ransomRoot, "marker"), []byte("m"), 0o644)
	ransom := rs.wait(t, "ransom marker", hasPath(filepath.Join(ransomRoot, "marker")))

	renames := 0
	for _, e := range ransom {
		if e.Op == event.FileRename && strings.HasSuffix(e.Path, ".locked") && e.OldPath != "" && e.Entropy > 7 {
			renames++
		}
	}
	if renames < n*9/10 {
		t.Fatalf("only %d of %d encrypting renames paired and sampled", renames, n)
	}
	bm, rm := maxFeatures(benign), maxFeatures(ransom)
	for _, name := range []string{"rate10s_renames", "rate10s_ext_change_renames", "rate10s_high_entropy",
		"rate60s_high_entropy", "rate10s_high_entropy_share"} {
		i := feature(t, name)
		t.Logf("%-30s benign %.3f  ransomware %.3f", name, bm[i], rm[i])
		if rm[i] < 3*bm[i] || rm[i]-bm[i] < 0.3 {
			t.Errorf("%s: ransomware %.3f not far above benign %.3f", name, rm[i], bm[i])
		}
	}
}

func TestWiperRemoves(t *testing.T) {
	root := t.TempDir()
	seedTree(t, root, 300)
	_, s := startWatch(t, watch.Config{Roots: []string{root}})
	for i := 0; i < 10; i++ {
		if err := os.RemoveAll(filepath.Join(root, fmt.Sprintf("d%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "marker"), []byte("m"), 0o644)
	evs := s.wait(t, "marker", hasPath(filepath.Join(root, "marker")))
	m := maxFeatures(evs)
	if v := m[feature(t, "rate10s_removes")]; v < 0.45 { // ln(1+c)/10 with c > ~90 removes in the window
		t.Fatalf("rate10s_removes %.3f after deleting 300 files", v)
	}
}

// dropped writes each file into a folder of ordinary files and returns the
// feature vector of its event.
func TestDroppedFiles(t *testing.T) {
	root := t.TempDir()
	_, s := startWatch(t, watch.Config{Roots: []string{root}})
	exe, _ := os.Executable()
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n" + strings.Repeat("echo \"step: building the project, please wait\"\nmake -j2 all || exit 1\n", 400)
	blob := make([]byte, 24<<10)
	rand.Read(blob)
	obf := "#!/bin/sh\necho '" + base64.StdEncoding.EncodeToString(blob) + "' | base64 -d > /tmp/.x && chmod +x /tmp/.x && /tmp/.x\n"

	files := map[string][]byte{
		"ordinary/build.sh":   []byte(script),
		"ordinary/index.php":  []byte("<?php\n" + strings.Repeat("echo htmlspecialchars($_GET['q'] ?? '');\n", 100)),
		"ordinary/readme.txt": []byte(strings.Repeat("Plain documentation for the ordinary files.\n", 100)),
		"ordinary/tool":       raw,
		"drop/obf.sh":         []byte(obf),
	}
	// Packed ELF: the test binary with its code section encrypted.
	ef, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	text := ef.Section(".text")
	packed := append([]byte(nil), raw...)
	blk, _ := aes.NewCipher(make([]byte, 16))
	code := packed[text.Offset : text.Offset+text.FileSize]
	cipher.NewCTR(blk, make([]byte, 16)).XORKeyStream(code, code)
	files["drop/packed-tool"] = packed
	if gz, err := exec.LookPath("gzexe"); err == nil {
		// gzexe turns an executable (or a script) into a shell script that
		// carries it gzip-compressed.
		dir := t.TempDir()
		for name, content := range map[string][]byte{"gzexed-tool": raw, "gzexed.sh": []byte(script)} {
			p := filepath.Join(dir, name)
			os.WriteFile(p, content, 0o755)
			if out, err := exec.Command(gz, p).CombinedOutput(); err != nil {
				t.Fatalf("gzexe: %v %s", err, out)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files["drop/"+name] = b
		}
	} else {
		t.Log("gzexe not installed: the gzexe case is skipped")
	}
	for _, d := range []string{"ordinary", "drop"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(root, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	evs := s.wait(t, "all dropped files", func(evs []event.File) bool {
		for name, b := range files {
			ok := false
			for _, e := range evs {
				if e.Path == filepath.Join(root, name) && e.Size == int64(len(b)) && e.Flags&event.FileFlagSampled != 0 {
					ok = true
				}
			}
			if !ok {
				return false
			}
		}
		return true
	})
	// Per-file content features of the final event of each file.
	x := fileactivity.NewExtractor()
	vec := map[string][]float32{}
	for i := range evs {
		v := make([]float32, fileactivity.Dim)
		x.Extract(&evs[i], v)
		if rel, err := filepath.Rel(root, evs[i].Path); err == nil {
			vec[rel] = v
		}
	}
	get := func(name, feat string) float32 { return vec[name][feature(t, feat)] }
	for name := range files {
		t.Logf("%-20s magic=%v packed_script=%.2f base64=%.2f exec_entropy=%.3f entropy=%.2f", name, get(name, "magic_script"),
			get(name, "packed_script"), get(name, "base64_frac"), get(name, "exec_section_entropy"), get(name, "entropy"))
	}
	if _, ok := files["drop/gzexed.sh"]; ok {
		for _, name := range []string{"drop/gzexed-tool", "drop/gzexed.sh"} {
			if v := get(name, "packed_script"); v < 0.8 {
				t.Errorf("%s: packed_script %.2f", name, v)
			}
		}
	}
	if v := get("drop/obf.sh", "base64_frac"); v < 0.9 {
		t.Errorf("base64 script: base64_frac %.2f", v)
	}
	if p, o := get("drop/packed-tool", "exec_section_entropy"), get("ordinary/tool", "exec_section_entropy"); p < 0.98 || p-o < 0.1 {
		t.Errorf("packed ELF exec entropy %.3f vs ordinary %.3f", p, o)
	}
	for _, name := range []string{"ordinary/build.sh", "ordinary/index.php", "ordinary/readme.txt", "ordinary/tool"} {
		if get(name, "packed_script") > 0.1 || get(name, "base64_frac") > 0.05 || get(name, "magic_mismatch") != 0 {
			t.Errorf("ordinary %s looks packed/obfuscated: %v", name, vec[name][:fileactivity.Dim])
		}
	}
}

// BenchmarkWatcherThroughput measures file events per second through the
// watcher with content statistics (file creation by the benchmark included).
func BenchmarkWatcherThroughput(b *testing.B) {
	root := b.TempDir()
	for i := 0; i < 16; i++ {
		os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%d", i)), 0o755)
	}
	w, s := startWatch(b, watch.Config{Roots: []string{root}, Debounce: 20 * time.Millisecond, BatchDelay: 5 * time.Millisecond})
	body := bytes.Repeat([]byte("some ordinary text content of a small file\n"), 24) // ~1 KiB
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		os.WriteFile(filepath.Join(root, fmt.Sprintf("d%d", i%16), fmt.Sprintf("f%d.txt", i)), body, 0o644)
	}
	s.wait(b, "all events", func(evs []event.File) bool { return len(evs) >= b.N || w.Stats().Overflows > 0 })
	el := time.Since(t0)
	b.StopTimer()
	st := w.Stats()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	b.ReportMetric(float64(st.Overflows), "overflows")
}
