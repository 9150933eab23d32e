// Package contentstats computes the bounded content statistics that file
// events carry: a head-and-tail sample of the file (never more than a fixed
// number of bytes), its Shannon entropy and byte-histogram summary, the
// content type from the first bytes against the type the extension promises,
// and, for ELF and PE files, header facts (sections, their entropy, imports)
// parsed with debug/elf and debug/pe through a byte-budgeted io.ReaderAt, with
// parser panics recovered.
//
// Everything here works on an io.ReaderAt and a size, never on a path, so the
// caller decides how a file is opened (the watcher opens beneath its root and
// never through a symbolic link). A Sampler is not safe for concurrent use: it
// owns its buffers so that sampling allocates nothing in the steady state.
package contentstats

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync/atomic"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Config bounds the work done per file.
type Config struct {
	// SampleBytes is the most content bytes read for the statistics: the
	// whole file when it is not larger, otherwise SampleBytes/2 from the
	// head and SampleBytes/2 from the tail. Default 64 KiB.
	SampleBytes int
	// ExecBudget is the most bytes read to parse ELF/PE headers, import
	// tables and section samples. Default 2 MiB.
	ExecBudget int
	// SectionSample is the most bytes of one section read for its entropy.
	// Default 64 KiB.
	SectionSample int
	// MaxSections bounds how many sections are sampled. Default 64.
	MaxSections int
}

func (c *Config) setDefaults() {
	if c.SampleBytes <= 0 {
		c.SampleBytes = 64 << 10
	}
	if c.SampleBytes < 64 {
		c.SampleBytes = 64
	}
	if c.ExecBudget <= 0 {
		c.ExecBudget = 2 << 20
	}
	if c.SectionSample <= 0 {
		c.SectionSample = 64 << 10
	}
	if c.MaxSections <= 0 {
		c.MaxSections = 64
	}
}

// Counters are the sampler's cumulative counters.
type Counters struct {
	Files        uint64 // files analysed
	BytesRead    uint64 // content bytes read for the statistics (not counting exec parsing)
	ExecBytes    uint64 // bytes read while parsing executables
	ExecParsed   uint64
	ExecBroken   uint64 // ELF/PE magic whose headers did not parse
	ParserPanics uint64 // panics recovered from debug/elf or debug/pe
	BudgetHits   uint64 // executable parsing stopped by ExecBudget
}

// Sampler computes content statistics. Create it with New; it is not safe for
// concurrent use (Counters may be read concurrently).
type Sampler struct {
	cfg  Config
	buf  []byte
	sect []byte
	c    struct {
		files, bytes, execBytes, execParsed, execBroken, panics, budget atomic.Uint64
	}
}

// New returns a Sampler with cfg's zero fields set to their defaults.
func New(cfg Config) *Sampler {
	cfg.setDefaults()
	return &Sampler{cfg: cfg, buf: make([]byte, cfg.SampleBytes)}
}

// Config returns the effective configuration.
func (s *Sampler) Config() Config { return s.cfg }

// Counters returns a snapshot of the counters.
func (s *Sampler) Counters() Counters {
	return Counters{
		Files: s.c.files.Load(), BytesRead: s.c.bytes.Load(), ExecBytes: s.c.execBytes.Load(),
		ExecParsed: s.c.execParsed.Load(), ExecBroken: s.c.execBroken.Load(),
		ParserPanics: s.c.panics.Load(), BudgetHits: s.c.budget.Load(),
	}
}

// Analyze samples r (a file of the given size) and fills the content fields
// of ev: SampleLen, Magic, ExtMagic, the byte statistics, the mismatch flag
// and, for ELF/PE content, the Exec facts. name is the file's name (only its
// extension is used). A read error other than a short read at the end is
// returned; ev's content fields are then left unset (FileFlagSampled clear).
func (s *Sampler) Analyze(r io.ReaderAt, size int64, name string, ev *event.File) error {
	s.c.files.Add(1)
	clearContent(ev)
	ev.ExtMagic = ExtMagic(name)
	sample, headLen, err := s.read(r, size)
	if err != nil {
		return err
	}
	s.c.bytes.Add(uint64(len(sample)))
	ev.SampleLen = uint32(len(sample))
	if size > int64(len(sample)) && len(sample) == s.cfg.SampleBytes {
		ev.Flags |= event.FileFlagHeadTail
	}
	st := Bytes(sample)
	ev.Entropy, ev.ZeroFrac, ev.PrintableFrac, ev.HighFrac = st.Entropy, st.ZeroFrac, st.PrintableFrac, st.HighFrac
	ev.ChiSquare, ev.Base64Frac = st.ChiSquare, st.Base64Frac
	ev.Magic = Detect(sample[:headLen])
	ev.Flags |= event.FileFlagSampled
	if Mismatch(ev.Magic, ev.ExtMagic) && !(ev.ExtMagic == event.MagicELF && ev.Magic == event.MagicText && LinkerScript(sample[:headLen])) {
		ev.Flags |= event.FileFlagMagicMismatch
	}
	if ev.Magic == event.MagicELF || ev.Magic == event.MagicPE {
		s.exec(r, size, ev)
	}
	return nil
}

func clearContent(ev *event.File) {
	ev.Flags &^= event.FileFlagSampled | event.FileFlagHeadTail | event.FileFlagMagicMismatch |
		event.FileFlagExecParsed | event.FileFlagExecBroken
	ev.SampleLen, ev.Magic, ev.ExtMagic = 0, 0, 0
	ev.Entropy, ev.ZeroFrac, ev.PrintableFrac, ev.HighFrac, ev.ChiSquare, ev.Base64Frac = 0, 0, 0, 0, 0, 0
	ev.ExecFlags, ev.Sections, ev.Imports, ev.Libraries = 0, 0, 0, 0
	ev.MaxSectionEntropy, ev.ExecSectionEntropy = 0, 0
}

// read fills s.buf with the head (and tail) of r. It returns the sample and
// the length of its head part (contiguous from offset 0).
func (s *Sampler) read(r io.ReaderAt, size int64) ([]byte, int, error) {
	n := s.cfg.SampleBytes
	if size <= int64(n) {
		if size < 0 {
			size = 0
		}
		k, err := r.ReadAt(s.buf[:size], 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("read sample: %w", err)
		}
		return s.buf[:k], k, nil
	}
	h := n / 2
	k, err := r.ReadAt(s.buf[:h], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("read sample head: %w", err)
	}
	if k < h { // the file shrank while we read it
		return s.buf[:k], k, nil
	}
	t := n - h
	k2, err := r.ReadAt(s.buf[h:n], size-int64(t))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("read sample tail: %w", err)
	}
	return s.buf[:h+k2], h, nil
}

// Stats is the byte-histogram summary of a buffer.
type Stats struct {
	Entropy       float32 // Shannon entropy in bits per byte
	ZeroFrac      float32
	PrintableFrac float32 // printable ASCII plus \t \n \r
	HighFrac      float32 // bytes >= 0x80
	ChiSquare     float32 // against the uniform distribution, 255 degrees of freedom
	Base64Frac    float32 // share of bytes in runs of >= Base64Run base64-alphabet characters
}

// Base64Run is the shortest run of base64-alphabet characters that counts
// towards Stats.Base64Frac.
const Base64Run = 64

var (
	printable [256]bool
	b64       [256]bool
	class     [256]uint8 // 1 upper, 2 lower, 4 digit
)

func init() {
	for c := 0x20; c < 0x7f; c++ {
		printable[c] = true
	}
	printable['\t'], printable['\n'], printable['\r'] = true, true, true
	for c := 'A'; c <= 'Z'; c++ {
		b64[c], class[c] = true, 1
		b64[c+'a'-'A'], class[c+'a'-'A'] = true, 2
	}
	for c := '0'; c <= '9'; c++ {
		b64[c], class[c] = true, 4
	}
	b64['+'], b64['/'], b64['='], b64['-'], b64['_'] = true, true, true, true, true
}

// Histogram returns the byte counts of b.
func Histogram(b []byte) (h [256]uint32) {
	if len(b) < 1024 {
		// Small samples (most files): one table; clearing and merging
		// four would cost more than the stalls they avoid.
		for _, c := range b {
			h[c]++
		}
		return h
	}
	// Four interleaved tables avoid store-to-load stalls on runs of one byte.
	var h1, h2, h3 [256]uint32
	i := 0
	for ; i+4 <= len(b); i += 4 {
		h[b[i]]++
		h1[b[i+1]]++
		h2[b[i+2]]++
		h3[b[i+3]]++
	}
	for ; i < len(b); i++ {
		h[b[i]]++
	}
	for j := range h {
		h[j] += h1[j] + h2[j] + h3[j]
	}
	return h
}

// Entropy returns the Shannon entropy in bits per byte of a histogram.
func Entropy(h *[256]uint32) float32 {
	var n uint64
	for _, c := range h {
		n += uint64(c)
	}
	if n == 0 {
		return 0
	}
	fn := float64(n)
	var e float64
	for _, c := range h {
		if c != 0 {
			p := float64(c) / fn
			e -= p * math.Log2(p)
		}
	}
	return float32(e)
}

// Bytes computes the statistics of b.
func Bytes(b []byte) Stats {
	if len(b) == 0 {
		return Stats{}
	}
	h := Histogram(b)
	n := float64(len(b))
	var st Stats
	st.Entropy = Entropy(&h)
	var pr, hi uint64
	exp := n / 256
	var chi float64
	for c, k := range h {
		if printable[c] {
			pr += uint64(k)
		}
		if c >= 0x80 {
			hi += uint64(k)
		}
		d := float64(k) - exp
		chi += d * d / exp
	}
	st.ZeroFrac = float32(float64(h[0]) / n)
	st.PrintableFrac = float32(float64(pr) / n)
	st.HighFrac = float32(float64(hi) / n)
	st.ChiSquare = float32(chi)
	st.Base64Frac = float32(float64(base64Runs(b)) / n)
	return st
}

// base64Runs returns the number of bytes of b inside runs of at least
// Base64Run base64-alphabet characters that mix upper case, lower case and
// digits, as encoded binary does ("=====" rulers and hex digests do not
// count). Every such run covers a multiple of Base64Run/2, so only those
// positions are probed and runs are grown from there: random data costs
// about one probe per 32 bytes instead of a branch per byte.
func base64Runs(b []byte) int {
	const stride = Base64Run / 2
	total := 0
	for i := stride - 1; i < len(b); {
		if !b64[b[i]] {
			i += stride
			continue
		}
		s, e := i, i+1
		for s > 0 && b64[b[s-1]] {
			s--
		}
		for e < len(b) && b64[b[e]] {
			e++
		}
		if e-s >= Base64Run {
			var mix uint8
			for _, c := range b[s:e] {
				mix |= class[c]
				if mix == 7 {
					break
				}
			}
			if mix == 7 {
				total += e - s
			}
		}
		// Next probe: the first probe position after the run's end.
		i = ((e+1)/stride+1)*stride - 1
		if i <= e {
			i += stride
		}
	}
	return total
}
