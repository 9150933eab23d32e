package contentstats

import (
	"bytes"
	"compress/zlib"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func aesCTR(t testing.TB, b []byte) []byte {
	blk, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(b))
	cipher.NewCTR(blk, make([]byte, 16)).XORKeyStream(out, b)
	return out
}

var prose = strings.Repeat("The quick brown fox jumps over the lazy dog while the agent watches the folder.\n", 200)

func TestBytesStats(t *testing.T) {
	cases := []struct {
		name           string
		b              []byte
		entLo, entHi   float32
		printLo, zeroF float32
		chiHi          float32 // upper bound for chi-square (random data is ~255)
	}{
		{"random", randomBytes(t, 64<<10), 7.95, 8.0, 0.3, 0, 400},
		{"aes", aesCTR(t, []byte(prose)), 7.9, 8.0, 0.3, 0, 500},
		{"text", []byte(prose), 3.5, 5.0, 1, 0, 1e9},
		{"zeros", make([]byte, 4096), 0, 0, 0, 1, 1e9},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := Bytes(c.b)
			if st.Entropy < c.entLo || st.Entropy > c.entHi {
				t.Fatalf("entropy %v not in [%v, %v]", st.Entropy, c.entLo, c.entHi)
			}
			if st.PrintableFrac < c.printLo {
				t.Fatalf("printable %v < %v", st.PrintableFrac, c.printLo)
			}
			if c.zeroF == 1 && st.ZeroFrac != 1 {
				t.Fatalf("zero frac %v", st.ZeroFrac)
			}
			if st.ChiSquare > c.chiHi {
				t.Fatalf("chi-square %v > %v", st.ChiSquare, c.chiHi)
			}
		})
	}
	// Text has a huge chi-square, random data a small one.
	if r, tx := Bytes(randomBytes(t, 64<<10)).ChiSquare, Bytes([]byte(prose)).ChiSquare; tx < 100*r {
		t.Fatalf("chi-square does not separate text (%v) from random (%v)", tx, r)
	}
	if got := Bytes(nil); got != (Stats{}) {
		t.Fatalf("empty: %+v", got)
	}
}

func TestBase64Frac(t *testing.T) {
	blob := base64.StdEncoding.EncodeToString(randomBytes(t, 3000))
	obf := "#!/bin/sh\neval \"$(echo '" + blob + "' | base64 -d)\"\n"
	if f := Bytes([]byte(obf)).Base64Frac; f < 0.9 {
		t.Fatalf("obfuscated script base64 frac %v", f)
	}
	plain := prose + strings.Repeat("=", 200) + "\n" + strings.Repeat("deadbeef", 40) + "\n"
	if f := Bytes([]byte(plain)).Base64Frac; f != 0 {
		t.Fatalf("plain text with rulers and hex digests: base64 frac %v", f)
	}
}

func TestDetect(t *testing.T) {
	tar := make([]byte, 512)
	copy(tar[257:], "ustar")
	cases := []struct {
		b    []byte
		want event.Magic
	}{
		{nil, event.MagicEmpty},
		{[]byte("\x7fELF\x02\x01\x01"), event.MagicELF},
		{[]byte("MZ\x90\x00"), event.MagicPE},
		{[]byte("#!/bin/sh\necho hi\n"), event.MagicScript},
		{[]byte("\x1f\x8b\x08\x00"), event.MagicGzip},
		{[]byte("PK\x03\x04\x14\x00"), event.MagicZip},
		{[]byte("%PDF-1.7\n"), event.MagicPDF},
		{[]byte("\x89PNG\r\n\x1a\n...."), event.MagicPNG},
		{[]byte("\xff\xd8\xff\xe0"), event.MagicJPEG},
		{[]byte("GIF89a"), event.MagicGIF},
		{[]byte("\xfd7zXZ\x00\x00"), event.MagicXZ},
		{[]byte("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"), event.MagicOLE},
		{[]byte("SQLite format 3\x00"), event.MagicSQLite},
		{tar, event.MagicTar},
		{[]byte("\xef\xbb\xbf<?xml version=\"1.0\"?>"), event.MagicXML},
		{[]byte("  <!DOCTYPE html><html>"), event.MagicHTML},
		{[]byte(prose), event.MagicText},
		{[]byte("Grüße aus Köln, naïve café\n"), event.MagicText},
		{[]byte("caf\xe9 cr\xe8me br\xfbl\xe9e, legacy latin-1 text\n"), event.MagicText},
		{aesCTR(t, []byte(prose)), event.MagicUnknown},
		{[]byte("abc\x00def"), event.MagicUnknown},
		// "x^" is a valid zlib header; text that starts with it stays text.
		{[]byte("x^2 + y^2 = r^2 is the circle's equation\n"), event.MagicText},
		{[]byte("\x78\x9c\x06"), event.MagicUnknown}, // too short to tell
		{[]byte("PACK\x00\x00\x00\x02\x00\x00\x01\x2c\x9d"), event.MagicGitPack},
		{[]byte("\xfftOc\x00\x00\x00\x02\x00\x00\x00\x03"), event.MagicGitIndex},
		{[]byte("PACKING LIST\n1 box\n"), event.MagicText},
	}
	// Real zlib streams at every level (git writes its loose objects at
	// level 1 or the default), and a git blob.
	for _, level := range []int{zlib.NoCompression, zlib.BestSpeed, 3, zlib.DefaultCompression, zlib.BestCompression} {
		var b bytes.Buffer
		w, err := zlib.NewWriterLevel(&b, level)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "blob %d\x00%s", len(prose), prose)
		w.Close()
		cases = append(cases, struct {
			b    []byte
			want event.Magic
		}{b.Bytes(), event.MagicZlib})
	}
	// DER: a certificate, PKCS#1 and PKCS#8 keys, a CRL.
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "vigil test"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, SubjectKeyId: []byte{1, 2, 3, 4}}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1)}, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{cert, x509.MarshalPKCS1PrivateKey(key), p8, crl} {
		cases = append(cases, struct {
			b    []byte
			want event.Magic
		}{b, event.MagicDER})
	}
	cases = append(cases, struct {
		b    []byte
		want event.Magic
	}{[]byte("\x30\x82\x00\x10\x30\x82\x01\x00"), event.MagicUnknown}) // non-minimal length
	for _, c := range cases {
		if got := Detect(c.b); got != c.want {
			t.Errorf("Detect(%.20q) = %v, want %v", c.b, got, c.want)
		}
	}
}

func TestExtAndMismatch(t *testing.T) {
	cases := []struct {
		name     string
		got      event.Magic
		mismatch bool
	}{
		{"notes.txt", event.MagicELF, true},
		{"notes.txt", event.MagicText, false},
		{"notes.TXT", event.MagicUnknown, true},
		{"run.sh", event.MagicScript, false},
		{"run.sh", event.MagicText, false},
		{"page.html", event.MagicText, false},
		{"report.docx", event.MagicZip, false},
		{"report.docx", event.MagicUnknown, true},
		{"report.doc", event.MagicRTF, false},
		{"photo.jpg", event.MagicPE, true},
		{"x.locked", event.MagicUnknown, false}, // unknown extension: no opinion
		{"Makefile", event.MagicText, false},
		{".bashrc", event.MagicELF, false},
		{"empty.pdf", event.MagicEmpty, false},
		{"lib.so", event.MagicELF, false},
		{"setup.exe", event.MagicPE, false},
	}
	for _, c := range cases {
		if got := Mismatch(c.got, ExtMagic(c.name)); got != c.mismatch {
			t.Errorf("Mismatch(%v, %q) = %v, want %v", c.got, c.name, got, c.mismatch)
		}
	}
	if Ext("/a/b.tar.GZ") != "gz" || Ext("/a/.hidden") != "" || Ext("/a/b.") != "" || Ext("x.d/y") != "" {
		t.Fatal("Ext")
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

func TestAnalyzeBoundedHeadTail(t *testing.T) {
	// 8 MiB: zero head, random middle, text tail. Only head and tail are read.
	size := 8 << 20
	b := make([]byte, size)
	copy(b[1<<20:], randomBytes(t, 6<<20))
	copy(b[size-(64<<10):], strings.Repeat(prose, 5))
	s := New(Config{SampleBytes: 32 << 10})
	cr := &countingReader{r: bytes.NewReader(b)}
	var ev event.File
	if err := s.Analyze(cr, int64(size), "big.bin", &ev); err != nil {
		t.Fatal(err)
	}
	if cr.n != 32<<10 || ev.SampleLen != 32<<10 {
		t.Fatalf("read %d bytes, sample %d, want %d", cr.n, ev.SampleLen, 32<<10)
	}
	if ev.Flags&event.FileFlagHeadTail == 0 || ev.Flags&event.FileFlagSampled == 0 {
		t.Fatalf("flags %b", ev.Flags)
	}
	// Half zeros (head), half text (tail): the random middle was not seen.
	if ev.ZeroFrac < 0.49 || ev.ZeroFrac > 0.51 || ev.PrintableFrac < 0.49 || ev.Entropy > 6 {
		t.Fatalf("stats %+v", ev)
	}
	if c := s.Counters(); c.BytesRead != 32<<10 || c.Files != 1 {
		t.Fatalf("counters %+v", c)
	}
	// A file that shrank under us: a short read is not an error.
	var ev2 event.File
	if err := s.Analyze(bytes.NewReader(b[:100]), int64(size), "shrunk", &ev2); err != nil || ev2.SampleLen != 100 {
		t.Fatalf("shrunk: %v %d", err, ev2.SampleLen)
	}
}

func TestAnalyzeSelfELF(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{})
	var ev event.File
	if err := s.Analyze(bytes.NewReader(raw), int64(len(raw)), "contentstats.test", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Magic != event.MagicELF || ev.Flags&event.FileFlagExecParsed == 0 || ev.ExecFlags&event.ExecELF == 0 {
		t.Fatalf("self not parsed as ELF: %+v", ev)
	}
	ef, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if int(ev.Sections) != len(ef.Sections) || ev.Sections < 10 {
		t.Fatalf("sections %d, debug/elf says %d", ev.Sections, len(ef.Sections))
	}
	if ev.ExecSectionEntropy < 4 || ev.ExecSectionEntropy > 7 || ev.ExecFlags&event.ExecWX != 0 || ev.ExecFlags&event.ExecEntryOutside != 0 {
		t.Fatalf("ordinary code looks odd: exec entropy %v flags %b", ev.ExecSectionEntropy, ev.ExecFlags)
	}
	if c := s.Counters(); c.ExecBytes > uint64(s.Config().ExecBudget) {
		t.Fatalf("exec parsing read %d bytes, budget %d", c.ExecBytes, s.Config().ExecBudget)
	}

	// Packed: the test overwrites the code section with encrypted bytes.
	text := ef.Section(".text")
	if text == nil {
		t.Fatal("no .text")
	}
	packed := append([]byte(nil), raw...)
	code := packed[text.Offset : text.Offset+text.FileSize]
	copy(code, aesCTR(t, code))
	var pev event.File
	if err := s.Analyze(bytes.NewReader(packed), int64(len(packed)), "contentstats.test", &pev); err != nil {
		t.Fatal(err)
	}
	if pev.ExecSectionEntropy < 7.9 || pev.ExecSectionEntropy-ev.ExecSectionEntropy < 1 {
		t.Fatalf("encrypted code section: exec entropy %v (plain %v)", pev.ExecSectionEntropy, ev.ExecSectionEntropy)
	}
}

func TestAnalyzeTestdataExecs(t *testing.T) {
	cases := []struct {
		file     string
		flag     uint8
		sections uint16
		imports  uint32
		libs     uint16
	}{
		{"gcc-amd64-linux-exec", event.ExecELF, 37, 2, 1},
		{"gcc-386-mingw-exec", event.ExecPE, 15, 32, 2},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			raw, err := os.ReadFile("testdata/" + c.file)
			if err != nil {
				t.Fatal(err)
			}
			var ev event.File
			if err := New(Config{}).Analyze(bytes.NewReader(raw), int64(len(raw)), c.file+".txt", &ev); err != nil {
				t.Fatal(err)
			}
			if ev.ExecFlags&c.flag == 0 || ev.Sections != c.sections || ev.Imports != c.imports || ev.Libraries != c.libs {
				t.Fatalf("got flags %b sections %d imports %d libs %d", ev.ExecFlags, ev.Sections, ev.Imports, ev.Libraries)
			}
			if ev.Flags&event.FileFlagMagicMismatch == 0 {
				t.Fatal("executable named .txt: no mismatch flag")
			}
			if ev.ExecSectionEntropy <= 0 || ev.MaxSectionEntropy < ev.ExecSectionEntropy-0.5 {
				t.Fatalf("section entropy %v / %v", ev.ExecSectionEntropy, ev.MaxSectionEntropy)
			}
		})
	}
}

func TestExecBudget(t *testing.T) {
	raw, err := os.ReadFile("testdata/gcc-amd64-linux-exec")
	if err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{r: bytes.NewReader(raw)}
	_, err = ELFFacts(cr, int64(len(raw)), 200)
	if err == nil {
		t.Fatal("a 200-byte budget should not be enough")
	}
	if cr.n > 200 {
		t.Fatalf("read %d bytes with a budget of 200", cr.n)
	}
}

func TestGuardRecoversPanics(t *testing.T) {
	err := guard(func() error { panic("boom") })
	var pp *parserPanic
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("guard: %v", err)
	}
	_ = pp
}

// naiveBase64Runs is the obvious byte-by-byte definition base64Runs must match.
func naiveBase64Runs(b []byte) int {
	total, run, mix := 0, 0, uint8(0)
	for _, c := range b {
		if b64[c] {
			run++
			mix |= class[c]
			continue
		}
		if run >= Base64Run && mix == 7 {
			total += run
		}
		run, mix = 0, 0
	}
	if run >= Base64Run && mix == 7 {
		total += run
	}
	return total
}

func TestBase64RunsMatchesNaive(t *testing.T) {
	alpha := []byte("aZ9+/= \n.")
	for n := 0; n < 2000; n++ {
		b := make([]byte, n%300)
		r := randomBytes(t, len(b))
		for i := range b {
			if r[i]%8 == 0 {
				b[i] = alpha[int(r[i])%len(alpha)]
			} else {
				b[i] = "abcXYZ019"[int(r[i])%9]
			}
		}
		if got, want := base64Runs(b), naiveBase64Runs(b); got != want {
			t.Fatalf("base64Runs(%q) = %d, want %d", b, got, want)
		}
	}
}

func FuzzDetect(f *testing.F) {
	f.Add([]byte("\x7fELF"))
	f.Add([]byte("#!/bin/sh\n"))
	f.Add([]byte(prose[:300]))
	f.Add([]byte("\x78\x9c\x4b\xca\xc9\x4f\x52\x30\x60\x00"))         // zlib
	f.Add([]byte("\x30\x82\x03\xa1\x30\x82\x02\x89\xa0\x03\x02\x01")) // DER certificate
	f.Add([]byte("\x30\x81"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := Detect(b)
		if m >= event.MagicEnd {
			t.Fatalf("magic %d out of range", m)
		}
		st := Bytes(b)
		if st.Entropy < 0 || st.Entropy > 8.0001 || st.PrintableFrac > 1 || st.Base64Frac > 1 {
			t.Fatalf("stats out of range: %+v", st)
		}
		if got, want := base64Runs(b), naiveBase64Runs(b); got != want {
			t.Fatalf("base64Runs = %d, naive %d", got, want)
		}
		_ = Ext(string(b))
		_ = ExtMagic(string(b))
	})
}

func FuzzExecFacts(f *testing.F) {
	for _, name := range []string{"gcc-amd64-linux-exec", "gcc-386-mingw-exec"} {
		if raw, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(raw)
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Add([]byte("MZ"))
	s := New(Config{ExecBudget: 1 << 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev event.File
		if err := s.Analyze(bytes.NewReader(b), int64(len(b)), "x", &ev); err != nil {
			t.Fatalf("Analyze on an in-memory reader: %v", err)
		}
		if ev.Flags&event.FileFlagExecParsed != 0 && ev.Flags&event.FileFlagExecBroken != 0 {
			t.Fatal("parsed and broken")
		}
		cr := &countingReader{r: bytes.NewReader(b)}
		_, _ = PEFacts(cr, int64(len(b)), 4096)
		_, _ = ELFFacts(cr, int64(len(b)), 4096)
		if cr.n > 2*4096 {
			t.Fatalf("read %d bytes past the budget", cr.n)
		}
	})
}

func BenchmarkAnalyzeSmallText(b *testing.B) {
	s := New(Config{})
	data := []byte(prose[:4096])
	r := bytes.NewReader(data)
	var ev event.File
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		_ = s.Analyze(r, int64(len(data)), "a.txt", &ev)
	}
}

func BenchmarkAnalyze64KiB(b *testing.B) {
	s := New(Config{})
	data := randomBytes(b, 1<<20)
	r := bytes.NewReader(data)
	var ev event.File
	b.SetBytes(64 << 10)
	for i := 0; i < b.N; i++ {
		_ = s.Analyze(r, int64(len(data)), "a.bin", &ev)
	}
}

// TestHistogramSizes: the single-table path for small samples and the
// interleaved one for large samples count exactly like a plain loop.
func TestHistogramSizes(t *testing.T) {
	b := make([]byte, 3000)
	for i := range b {
		b[i] = byte(i*i/7 + i%3)
	}
	for _, n := range []int{0, 1, 3, 4, 5, 255, 1023, 1024, 1025, 2999, 3000} {
		var want [256]uint32
		for _, c := range b[:n] {
			want[c]++
		}
		if got := Histogram(b[:n]); got != want {
			t.Errorf("Histogram of %d bytes differs from a plain count", n)
		}
	}
}

// TestLinkerScript: the .so files that are GNU ld scripts (glibc's libc.so,
// ncurses' libncurses.so, Debian's libtermcap.so) are not a content
// mismatch; other text named .so is.
func TestLinkerScript(t *testing.T) {
	cases := []struct {
		text string
		want bool
	}{
		{"/* GNU ld script\n   Use the shared library.  */\nOUTPUT_FORMAT(elf64-x86-64)\nGROUP ( /lib/x86_64-linux-gnu/libc.so.6 )\n", true},
		{"INPUT(libncurses.so.6 -ltinfo)\n", true},
		{"/* We use a linker script rather than a symlink to work around\n   an ldconfig bug. */\nINPUT(-lncurses)\n", true},
		{"GROUP (libfoo.so.1)", true},
		{"#!/bin/sh\necho INPUT(x)\n", false},
		{"INPUTS are validated here\n", false},
		{"/* unterminated comment INPUT(x)", false},
		{"hello world\n", false},
	}
	for _, c := range cases {
		if got := LinkerScript([]byte(c.text)); got != c.want {
			t.Errorf("LinkerScript(%.30q) = %v, want %v", c.text, got, c.want)
		}
	}
	s := New(Config{})
	for _, c := range []struct {
		name, text string
		mismatch   bool
	}{
		{"libncurses.so", "INPUT(libncurses.so.6 -ltinfo)\n", false},
		{"libevil.so", "just some text, not a library\n", true},
	} {
		var ev event.File
		if err := s.Analyze(strings.NewReader(c.text), int64(len(c.text)), c.name, &ev); err != nil {
			t.Fatal(err)
		}
		if got := ev.Flags&event.FileFlagMagicMismatch != 0; got != c.mismatch {
			t.Errorf("%s: mismatch %v, want %v", c.name, got, c.mismatch)
		}
	}
}
