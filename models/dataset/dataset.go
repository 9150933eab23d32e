// Package dataset turns packet captures into the feature vectors the models
// train and are evaluated on: it lists capture files (files or folders), runs
// each through the agent's own capture and decode code (agent/capture) and the
// feature-set packages the detector plugins run (models/features/...), with
// fresh extractor state per capture as `vigil-agent scan` does, and reads the
// ground truth of attack captures (MANIFEST.csv rows or a lab truth file).
//
// It is shared by `vigilctl model train`, `vigilctl model eval` and the
// baseline trainer (models/cmd/vigil-train-baseline), so all three see the
// same vectors for the same packets. It is pure Go: scoring goes through
// train.Scorer (models/runtime.Scorer satisfies it).
package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/features/fileactivity"
	"github.com/vigil-edge/vigil/models/features/netflow"
	"github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Extractor computes one feature vector per packet (stateful, in order).
type Extractor interface {
	Extract(p *event.Packet, out []float32)
}

// FileExtractor computes one feature vector per file event (stateful, in
// order).
type FileExtractor interface {
	Extract(ev *event.File, out []float32)
}

// FeatureSet is a feature set a detector scores: a packet set (New) or a
// file-event set (NewFiles), whose captures are file-event traces
// (event.ReadTrace) instead of pcaps.
type FeatureSet struct {
	Name     string
	Detector string // the detector plugin that runs it (bundle.Manifest.Detector)
	Dim      int
	Names    func() []string
	// New returns an extractor with fresh state, configured as the plugin
	// configures it; nil for a file-event set.
	New func() Extractor
	// NewFiles is New for a file-event set; nil for a packet set.
	NewFiles func() FileExtractor
}

// Files reports whether s is a file-event feature set.
func (s FeatureSet) Files() bool { return s.NewFiles != nil }

// Sets are the packet feature sets, in the order the baseline trainer uses.
func Sets() []FeatureSet {
	return []FeatureSet{
		{Name: netflow.Name, Detector: "netflow", Dim: netflow.Dim, Names: netflow.Names,
			New: func() Extractor { return netflow.New(netflow.Config{HashSeed: 1}) }},
		{Name: nethost.Name, Detector: "netflow", Dim: nethost.Dim, Names: nethost.Names,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1}) }},
		{Name: nethost.NameV2, Detector: "netflow", Dim: nethost.DimV2, Names: nethost.NamesV2,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1, V2: true}) }},
		{Name: nethost.NameV3, Detector: "netflow", Dim: nethost.DimV3, Names: nethost.NamesV3,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1, V3: true}) }},
		{Name: nethost.NameV4, Detector: "netflow", Dim: nethost.DimV4, Names: nethost.NamesV4,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1, V4: true}) }},
		{Name: nethost.NameV5, Detector: "netflow", Dim: nethost.DimV5, Names: nethost.NamesV5,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1, V5: true}) }},
		{Name: nethost.NameV6, Detector: "netflow", Dim: nethost.DimV6, Names: nethost.NamesV6,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1, V6: true}) }},
		{Name: nethost.NameV7, Detector: "netflow", Dim: nethost.DimV7, Names: nethost.NamesV7,
			New: func() Extractor { return nethost.New(nethost.Config{HashSeed: 1, V7: true}) }},
	}
}

// FileSets are the file-event feature sets.
func FileSets() []FeatureSet {
	return []FeatureSet{
		{Name: fileactivity.Name, Detector: "fileactivity", Dim: fileactivity.Dim, Names: fileactivity.Names,
			NewFiles: func() FileExtractor { return fileactivity.NewExtractor() }},
	}
}

// Lookup returns the feature set called name ("nethost/v1",
// "fileactivity/v1").
func Lookup(name string) (FeatureSet, error) {
	var known []string
	for _, s := range append(Sets(), FileSets()...) {
		if s.Name == name {
			return s, nil
		}
		known = append(known, s.Name)
	}
	return FeatureSet{}, fmt.Errorf("unknown feature set %q (known: %s)", name, strings.Join(known, ", "))
}

// DefaultMaxPackets bounds the packets read from one capture.
const DefaultMaxPackets = 200_000

// Capture holds the features of every packet of one capture, for each of
// the feature sets it was extracted with (Feats[k] is row-major, N×Dim of
// set k), with each packet's source address and time.
type Capture struct {
	Path  string
	N     int
	Sets  []FeatureSet
	Feats [][]float32
	Src   []netip.Addr
	// SrcMAC is each packet's frame source MAC (nil for file events).
	SrcMAC [][6]byte
	TS     []int64 // unix nanoseconds
	// WebAttacks counts the packets that the agent's decoder marked as an
	// HTTP attack (event.FlagHTTPInjection or FlagHTTPTraversal): a
	// "benign" capture with any is not benign.
	WebAttacks int
	// CmdShells counts the packets that the agent's decoder marked as a
	// command shell served over the network (event.HintCmdShell).
	CmdShells int
	// ICMPData counts the ICMP echoes that the agent's decoder marked as
	// carrying covert data (event.HintICMPData).
	ICMPData int
	// HexData counts the packets that the agent's decoder marked as
	// carrying hex-encoded data (event.HintHexData).
	HexData int
	// CookieReuse counts the HTTP requests that the agent's decoder marked
	// as presenting another client's session cookie (event.HintCookieReuse).
	CookieReuse int
	// Reason says why reading stopped early (a decode error after some
	// packets, or the packet bound); empty when the file was read to its end.
	Reason string
	// Truncated is the packet (or file-event) bound that cut the capture
	// (--max-packets): the file holds more than the N packets read. Zero
	// when the file was read to its end or stopped at an error (Reason).
	// Trainers and evaluators must say so: the rest was not used.
	Truncated int
}

// TruncatedNote is "truncated at N packets" (or "file events") for a
// capture cut at the bound, "" for one read to its end.
func (c *Capture) TruncatedNote() string {
	if c.Truncated == 0 {
		return ""
	}
	unit := "packets"
	if len(c.Sets) > 0 && c.Sets[0].Files() {
		unit = "file events"
	}
	return fmt.Sprintf("truncated at %d %s", c.Truncated, unit)
}

// NotBenign says why a capture given as benign is not, or "" when nothing
// speaks against it: the agent's decoder marked some of its packets as
// attacks on a web application, as a command shell, as an ICMP covert
// channel, as hex-encoded data (the command-and-control traffic of
// malware) or as a hijacked web session. Trainers leave such captures out of benign data (zeek's test traces include a DVWA SQL
// injection and requests for ../../../etc/passwd).
func (c *Capture) NotBenign() string {
	var why []string
	if c.WebAttacks > 0 {
		why = append(why, fmt.Sprintf("%d packets carry HTTP attacks (SQL injection, XSS or path traversal)", c.WebAttacks))
	}
	if c.CmdShells > 0 {
		why = append(why, fmt.Sprintf("%d packets serve a command shell", c.CmdShells))
	}
	if c.ICMPData > 0 {
		why = append(why, fmt.Sprintf("%d ICMP echoes carry covert data", c.ICMPData))
	}
	if c.HexData > 0 {
		why = append(why, fmt.Sprintf("%d packets carry hex-encoded data", c.HexData))
	}
	if c.CookieReuse > 0 {
		why = append(why, fmt.Sprintf("%d requests present another client's session cookie", c.CookieReuse))
	}
	return strings.Join(why, "; ")
}

// Matrix returns the features of set k as a matrix view.
func (c *Capture) Matrix(k int) ae.Matrix {
	return ae.Matrix{Data: c.Feats[k], Rows: c.N, Cols: c.Sets[k].Dim}
}

// Extract reads the capture at path (pcap or pcapng) through agent/capture
// and computes every set's features with fresh extractor state. It reads at
// most maxPackets packets (DefaultMaxPackets if 0); a longer capture is cut
// there and says so in Truncated (and Reason). A decode error after some
// packets keeps them and is recorded in Reason. For file-event sets the
// capture is a file-event trace (ExtractTrace).
func Extract(ctx context.Context, path string, sets []FeatureSet, maxPackets int) (*Capture, error) {
	if maxPackets <= 0 {
		maxPackets = DefaultMaxPackets
	}
	files := 0
	for _, s := range sets {
		if s.Files() {
			files++
		}
	}
	switch {
	case files == len(sets) && files > 0:
		return ExtractTrace(ctx, path, sets, maxPackets)
	case files > 0:
		return nil, errors.New("extract: packet and file-event feature sets mixed")
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, err // names the file
	}
	defer src.Close()
	c := &Capture{Path: path, Sets: sets, Feats: make([][]float32, len(sets))}
	ex := make([]Extractor, len(sets))
	vec := make([][]float32, len(sets))
	for k, s := range sets {
		ex[k] = s.New()
		vec[k] = make([]float32, s.Dim)
	}
	buf := make([]event.Packet, 1024)
	for c.N < maxPackets {
		n, err := src.Next(ctx, buf[:min(len(buf), maxPackets-c.N)])
		for i := range buf[:n] {
			p := &buf[i]
			for k := range sets {
				ex[k].Extract(p, vec[k])
				c.Feats[k] = append(c.Feats[k], vec[k]...)
			}
			if p.Flags&(event.FlagHTTPInjection|event.FlagHTTPTraversal) != 0 {
				c.WebAttacks++
			}
			if p.VLAN&event.HintCmdShell != 0 {
				c.CmdShells++
			}
			if p.VLAN&event.HintICMPData != 0 {
				c.ICMPData++
			}
			if p.VLAN&event.HintHexData != 0 {
				c.HexData++
			}
			if p.VLAN&event.HintCookieReuse != 0 {
				c.CookieReuse++
			}
			c.Src = append(c.Src, p.SrcAddr())
			c.SrcMAC = append(c.SrcMAC, p.SrcMAC)
			c.TS = append(c.TS, p.TimestampNs)
			c.N++
		}
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if c.N > 0 { // keep what decoded before the error
				c.Reason = err.Error()
				return c, nil
			}
			return nil, err // names the file and the record
		}
	}
	// At the bound: one more packet tells a longer file (cut) from one of
	// exactly maxPackets packets (read whole).
	n := 0
	for n == 0 && err == nil {
		n, err = src.Next(ctx, buf[:1])
	}
	switch {
	case n > 0:
		c.Truncated = maxPackets
		c.Reason = fmt.Sprintf("stopped at %d packets", maxPackets)
	case errors.Is(err, io.EOF):
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.Reason = err.Error()
	}
	return c, nil
}

// ExtractTrace reads the file-event trace at path (event.ReadTrace: what
// `vigil-agent record` writes, plain or gzip-compressed) and computes every
// file-event set's features with fresh extractor state, as the fileactivity
// plugin does for a new watch. It reads at most maxEvents events
// (DefaultMaxPackets if 0), keeping them and saying so in Reason when the
// trace is longer; a trace cut short inside a frame keeps its complete
// frames. Src is the zero address for every event.
func ExtractTrace(ctx context.Context, path string, sets []FeatureSet, maxEvents int) (*Capture, error) {
	if maxEvents <= 0 {
		maxEvents = DefaultMaxPackets
	}
	for _, s := range sets {
		if !s.Files() {
			return nil, fmt.Errorf("extract %s: %s is not a file-event feature set", path, s.Name)
		}
	}
	evs, stop, err := readTrace(path, maxEvents)
	if err != nil {
		return nil, err
	}
	c := &Capture{Path: path, Sets: sets, Feats: make([][]float32, len(sets))}
	if stop != nil {
		c.Reason = stop.Error()
		if errors.Is(stop, event.ErrTraceLimit) {
			c.Truncated = maxEvents
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.N = len(evs)
	c.Src = make([]netip.Addr, c.N)
	c.TS = make([]int64, c.N)
	for i := range evs {
		c.TS[i] = evs[i].TimeNs
	}
	for k, s := range sets {
		x := s.NewFiles()
		c.Feats[k] = make([]float32, c.N*s.Dim)
		for i := range evs {
			x.Extract(&evs[i], c.Feats[k][i*s.Dim:(i+1)*s.Dim])
		}
	}
	return c, nil
}

// readTrace is event.ReadTraceFile with the reason a trace was read in part
// (stop) as an error, to tell the event bound (event.ErrTraceLimit) from a
// cut frame.
func readTrace(path string, maxEvents int) (evs []event.File, stop, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read trace: %w", err)
	}
	defer f.Close()
	evs, err = event.ReadTrace(f, maxEvents)
	if err != nil {
		if len(evs) == 0 || errors.Is(err, event.ErrTraceBadMagic) {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		return evs, err, nil
	}
	return evs, nil, nil
}

// List expands paths (capture files or folders, walked recursively) into a
// sorted list of regular files, each file once: files are told apart by
// identity (os.SameFile), not by spelling, so "caps", "./caps/b.pcap" and
// "/abs/caps/b.pcap" list b.pcap once (under the first spelling met), and a
// hard link or symlink to a listed file adds nothing. A path that is a
// symlink is followed (a symlinked folder is walked, its files named under
// the given path); inside a folder, symlinks to regular files are listed,
// symlinks to folders are not followed (no cycles). A path that does not
// exist, or that is neither a regular file nor a folder (a device, a FIFO),
// is an error. A folder holding no regular file adds nothing (ListNonEmpty
// makes that an error).
func List(paths ...string) ([]string, error) { return list(false, paths) }

// ListNonEmpty is List, and a folder holding no regular file (directly or
// below) is an error naming it: for paths a user gave one by one, where an
// empty folder is a mistake rather than "no data" (an attack folder whose
// captures are elsewhere would otherwise evaluate as "0 of 0 detected").
func ListNonEmpty(paths ...string) ([]string, error) { return list(true, paths) }

func list(nonEmpty bool, paths []string) ([]string, error) {
	l := lister{bySize: map[int64][]fs.FileInfo{}}
	for _, root := range paths {
		n, err := l.add(root)
		if err != nil {
			return nil, fmt.Errorf("list captures: %w", err)
		}
		if n == 0 && nonEmpty {
			return nil, fmt.Errorf("list captures: folder %s holds no files", root)
		}
	}
	sort.Strings(l.out)
	return l.out, nil
}

// lister collects distinct regular files.
type lister struct {
	bySize map[int64][]fs.FileInfo // the listed files by size, for os.SameFile
	out    []string
}

// file lists path unless the file it names is already listed.
func (l *lister) file(path string, fi fs.FileInfo) {
	for _, seen := range l.bySize[fi.Size()] {
		if os.SameFile(seen, fi) {
			return
		}
	}
	l.bySize[fi.Size()] = append(l.bySize[fi.Size()], fi)
	l.out = append(l.out, path)
}

// add lists the regular files at root (a file, or a folder walked
// recursively; symlinks followed) and returns how many it found, counting
// those listed already.
func (l *lister) add(root string) (int, error) {
	fi, err := os.Stat(root) // follows a symlink
	if err != nil {
		return 0, err // names root
	}
	switch {
	case fi.Mode().IsRegular():
		l.file(root, fi)
		return 1, nil
	case !fi.IsDir():
		return 0, fmt.Errorf("%s is neither a regular file nor a folder (mode %s)", root, fi.Mode().Type())
	}
	// WalkDir does not follow a root that is a symlink: walk its target
	// and name the files under root as given.
	dir, err := filepath.EvalSymlinks(root)
	if err != nil {
		return 0, err
	}
	n := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var fi fs.FileInfo
		switch t := d.Type(); {
		case t.IsRegular():
			if fi, err = d.Info(); err != nil {
				return err
			}
		case t&fs.ModeSymlink != 0:
			if fi, err = os.Stat(p); err != nil || !fi.Mode().IsRegular() {
				return nil // a dangling link, or a link to a folder (not followed) or a device
			}
		default:
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		n++
		l.file(filepath.Join(root, rel), fi)
		return nil
	})
	return n, err
}

// Stack concatenates the features of set k of the captures into one matrix.
func Stack(caps []*Capture, k int) ae.Matrix {
	if len(caps) == 0 {
		return ae.Matrix{}
	}
	var n int
	for _, c := range caps {
		n += c.N
	}
	dim := caps[0].Sets[k].Dim
	m := ae.Matrix{Data: make([]float32, 0, n*dim), Cols: dim, Rows: n}
	for _, c := range caps {
		m.Data = append(m.Data, c.Feats[k]...)
	}
	return m
}

// Sample returns up to n evenly spaced rows of m (for the static
// quantization's activation ranges).
func Sample(m ae.Matrix, n int) ae.Matrix {
	if m.Rows <= n {
		return m
	}
	out := ae.Matrix{Data: make([]float32, 0, n*m.Cols), Rows: n, Cols: m.Cols}
	for i := range n {
		out.Data = append(out.Data, m.Row(i*m.Rows/n)...)
	}
	return out
}

// ScoreChunk is the rows per ONNX Runtime run in calibration and
// evaluation of a float or static-QDQ model: small enough that such a model
// scores each row as it scores it alone. ONNX Runtime 1.24.3's AMX int8
// kernel gets the 32nd row of each 32-row block wrong for some GEMM widths
// (docs/models.md, section 5; the trainers export AMX-safe widths, older
// bundles are not). It does not hold for a dynamically quantized model
// (bundle.QuantInt8Dyn): each run is quantized with one scale taken from its
// own range, so a row's score depends on the rows it is run with, and the
// plugins' load-time check (runtime.ConsistentRun) cuts such a model to
// runs of one row. Use ChunkFor, which scores those one row at a time too.
// The plugins score larger runs only after that check shows them equal to
// single rows.
const ScoreChunk = 16

// ChunkFor is the rows per ONNX Runtime run in which calibration and
// evaluation score a model of quantization quant (bundle.Manifest's
// Quantization), so that its scores are the ones a sensor computes: 1 for
// bundle.QuantInt8Dyn (scored in 16-row runs, 19,227 of 20,000 held-out
// nethost scores differed from the sensor's single-row ones, by up to 2.9%),
// ScoreChunk for float and static-QDQ models.
func ChunkFor(quant string) int {
	if quant == bundle.QuantInt8Dyn {
		return 1
	}
	return ScoreChunk
}

// Chunked scores in runs of Chunk rows (ScoreChunk if 0).
type Chunked struct {
	Scorer train.Scorer
	Dim    int
	Chunk  int
}

// Score implements train.Scorer.
func (c Chunked) Score(features []float32, n int) ([]float32, []float32, error) {
	chunk := c.Chunk
	if chunk <= 0 {
		chunk = ScoreChunk
	}
	if len(features) < n*c.Dim {
		return nil, nil, fmt.Errorf("score: %d values for %d vectors of %d", len(features), n, c.Dim)
	}
	scores := make([]float32, 0, n)
	contrib := make([]float32, 0, n*c.Dim)
	for off := 0; off < n; off += chunk {
		k := min(chunk, n-off)
		s, co, err := c.Scorer.Score(features[off*c.Dim:(off+k)*c.Dim], k)
		if err != nil {
			return nil, nil, err
		}
		scores = append(scores, s...)
		contrib = append(contrib, co...)
	}
	return scores, contrib, nil
}

// SplitHoldout splits files into training and held-out files: every k-th
// file (by sorted path, starting at the (k/2)-th) is held out, where
// k = round(1/frac). frac 0.2 holds out files 2, 7, 12, ... as the baseline
// trainer always did. A file split keeps the held-out packets from sessions
// never trained on.
func SplitHoldout(files []string, frac float64) (trainFiles, holdFiles []string) {
	if frac <= 0 {
		return files, nil
	}
	if frac >= 1 {
		return nil, files
	}
	k := int(1/frac + 0.5)
	for i, f := range files {
		if i%k == k/2 {
			holdFiles = append(holdFiles, f)
		} else {
			trainFiles = append(trainFiles, f)
		}
	}
	return trainFiles, holdFiles
}

// SplitTail splits each capture's packets in time order: the last frac of
// them are held out. It is the fallback when there are too few files for a
// file split.
func SplitTail(caps []*Capture, frac float64) (trainCaps, holdCaps []*Capture) {
	for _, c := range caps {
		cut := c.N - int(float64(c.N)*frac+0.5)
		trainCaps = append(trainCaps, c.slice(0, cut))
		holdCaps = append(holdCaps, c.slice(cut, c.N))
	}
	return trainCaps, holdCaps
}

func (c *Capture) slice(lo, hi int) *Capture {
	out := &Capture{Path: c.Path, N: hi - lo, Sets: c.Sets, Src: c.Src[lo:hi], TS: c.TS[lo:hi], Reason: c.Reason}
	if c.SrcMAC != nil {
		out.SrcMAC = c.SrcMAC[lo:hi]
	}
	for k, s := range c.Sets {
		out.Feats = append(out.Feats, c.Feats[k][lo*s.Dim:hi*s.Dim])
	}
	return out
}
