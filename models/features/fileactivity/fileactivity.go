// Package fileactivity is the feature set "fileactivity/v1": it turns
// event.File records into fixed-length float32 vectors for the fileactivity
// anomaly models. The trainer and the detector plugin both import it, so the
// model's input contract lives in exactly one place.
//
// A vector has two parts:
//   - per-event content features (operation, size, entropy, byte-histogram
//     summary, content type and its mismatch with the extension, executable
//     facts and packing indicators: executable-section entropy, few imports,
//     writable+executable sections, a script carrying binary data,
//     long base64 runs, and two crisp indicators that are zero for ordinary
//     files: executable code with the entropy of encrypted or compressed
//     data (exec_packed) and a script (shebang or script extension) made
//     mostly of long base64 runs (script_base64));
//   - damped activity rates of the event's watched tree (event.File.Root):
//     exponentially decayed counts with time constants of 1 s, 10 s and 60 s
//     of events, content writes, creates, renames, renames that change the
//     extension, removes, never-seen extensions, unexplained high-entropy
//     content, magic/extension mismatches, and the share of high-entropy
//     content among content events. A ransomware burst (encrypt + rename to
//     a new extension) or a wiper (mass remove) drives these far above any
//     ordinary workload.
//
// Extraction is deterministic: it depends only on the sequence of events and
// their timestamps (never on the wall clock). State is bounded: at most
// MaxTrees trees are tracked (least recently active evicted), each with a
// fixed-size extension set; the tables hold no pointers.
package fileactivity

import (
	"math"
	"strings"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Name is the feature set's name and version.
const Name = "fileactivity/v1"

// MaxTrees bounds the number of watched trees with rate state.
const MaxTrees = 256

// PackedExecEntropy is the entropy (bits per byte) of executable sections
// from which exec_packed starts to rise; it reaches 1 at PackedExecEntropy +
// 0.7. Compiled code stays well below (typically 5.5-6.7 bits per byte);
// encrypted or compressed code is close to 8.
const PackedExecEntropy = 7.0

// ScriptBase64Frac is the share of long base64 runs in a script from which
// script_base64 starts to rise; it reaches 1 at ScriptBase64Frac + 0.4.
const ScriptBase64Frac = 0.3

// scriptExts are extensions of interpreted scripts that may carry no
// shebang (web scripts).
var scriptExts = map[string]bool{"sh": true, "bash": true, "py": true, "pl": true, "rb": true, "php": true,
	"js": true, "mjs": true, "ps1": true, "bat": true, "cmd": true, "vbs": true, "lua": true, "jsp": true, "asp": true, "aspx": true}

// HighEntropy is the entropy (bits per byte) from which content that is not
// a compressed or media format counts as "high-entropy content".
const HighEntropy = 7.2

// Windows are the time constants of the damped rates, in seconds.
var Windows = [...]float64{1, 10, 60}

const (
	nEvent = 41
	nRate  = 10
)

// Dim is the length of a feature vector.
const Dim = nEvent + len(Windows)*nRate

var eventNames = [nEvent]string{
	"op_create", "op_write", "op_rename", "op_remove", "op_chmod", "is_dir", "log_size", "sampled",
	"entropy", "printable_frac", "zero_frac", "high_frac", "chi2_per_byte", "base64_frac",
	"magic_mismatch", "magic_unknown_binary", "magic_text", "magic_script", "magic_exec",
	"magic_compressed", "magic_media", "magic_document", "mode_executable", "exec_parsed",
	"exec_sections", "exec_imports", "exec_few_imports", "exec_section_entropy",
	"exec_max_section_entropy", "exec_wx", "exec_entry_outside", "exec_no_sections", "exec_broken",
	"packed_script", "ext_new", "ext_changed", "high_entropy_content", "hidden_name", "log_writes",
	"exec_packed", "script_base64",
}

var rateNames = [nRate]string{
	"events", "writes", "creates", "renames", "ext_change_renames", "removes", "new_exts",
	"high_entropy", "mismatches", "high_entropy_share",
}

// Names returns the feature names in vector order (a fresh slice).
func Names() []string {
	out := make([]string, 0, Dim)
	out = append(out, eventNames[:]...)
	for _, w := range Windows {
		p := "rate" + itoa(int(w)) + "s_"
		for _, n := range rateNames {
			out = append(out, p+n)
		}
	}
	return out
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

// counter indexes inside a window's decayed counts.
const (
	cEvents = iota
	cWrites
	cCreates
	cRenames
	cExtChange
	cRemoves
	cNewExt
	cHighEnt
	cMismatch
	cContent // content events (denominator of the high-entropy share), not a feature itself
	nCounters
)

const extSlots = 128 // per-tree extension set (open addressing); at most extFull used

const extFull = extSlots * 3 / 4

type tree struct {
	key    uint64
	lastNs int64
	c      [len(Windows)][nCounters]float64
	nExt   int32
	exts   [extSlots]uint64 // hashes of extensions seen; 0 = empty slot
}

// Extractor computes vectors for a stream of events. It is not safe for
// concurrent use; use one per stream.
type Extractor struct {
	trees []tree           // at most MaxTrees, pointer-free
	index map[uint64]int32 // key -> position in trees
	decay [len(Windows)]float64
}

// NewExtractor returns an Extractor with empty state.
func NewExtractor() *Extractor {
	return &Extractor{trees: make([]tree, 0, 8), index: make(map[uint64]int32)}
}

// Reset forgets all state.
func (x *Extractor) Reset() {
	x.trees = x.trees[:0]
	clear(x.index)
}

// Trees returns the number of trees with state.
func (x *Extractor) Trees() int { return len(x.trees) }

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	if h == 0 {
		h = 1
	}
	return h
}

// fnvLower hashes s lower-cased (ASCII).
func fnvLower(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= 1099511628211
	}
	if h == 0 {
		h = 1
	}
	return h
}

// ext returns the extension of the last element of p without the dot ("" for
// none, for dot files and for implausibly long extensions).
func ext(p string) string {
	base := p[strings.LastIndexByte(p, '/')+1:]
	i := strings.LastIndexByte(base, '.')
	if i <= 0 || i == len(base)-1 || len(base)-i-1 > 16 {
		return ""
	}
	return base[i+1:]
}

func (x *Extractor) tree(root string, ns int64) *tree {
	k := fnv(root)
	if i, ok := x.index[k]; ok {
		return &x.trees[i]
	}
	if len(x.trees) < MaxTrees {
		x.trees = append(x.trees, tree{key: k, lastNs: ns})
		x.index[k] = int32(len(x.trees) - 1)
		return &x.trees[len(x.trees)-1]
	}
	// Evict the least recently active tree (ties: lowest position).
	v := 0
	for i := range x.trees {
		if x.trees[i].lastNs < x.trees[v].lastNs {
			v = i
		}
	}
	delete(x.index, x.trees[v].key)
	x.trees[v] = tree{key: k, lastNs: ns}
	x.index[k] = int32(v)
	return &x.trees[v]
}

// seen reports whether h is in the set and inserts it when there is room.
// A full set answers "new" for every unseen extension.
func (t *tree) seen(h uint64) bool {
	i := h % extSlots
	for n := 0; n < extSlots; n++ {
		switch t.exts[i] {
		case h:
			return true
		case 0:
			if t.nExt < extFull {
				t.exts[i] = h
				t.nExt++
			}
			return false
		}
		i = (i + 1) % extSlots
	}
	return false
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

func clamp01(v float32) float32 {
	if !(v > 0) { // also NaN
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

func magicClass(m event.Magic) (text, script, exec, compressed, media, document bool) {
	switch m {
	case event.MagicText, event.MagicHTML, event.MagicXML:
		text = true
	case event.MagicScript:
		script = true
	case event.MagicELF, event.MagicPE, event.MagicMachO, event.MagicClass, event.MagicWasm:
		exec = true
	case event.MagicGzip, event.MagicZip, event.MagicBzip2, event.MagicXZ, event.MagicZstd, event.Magic7z, event.MagicRar, event.MagicZlib, event.MagicGitPack:
		compressed = true
	case event.MagicPNG, event.MagicJPEG, event.MagicGIF, event.MagicMP4, event.MagicWebP, event.MagicOgg, event.MagicMP3:
		media = true
	case event.MagicPDF, event.MagicOLE, event.MagicRTF, event.MagicSQLite, event.MagicTar, event.MagicDER, event.MagicGitIndex:
		document = true
	}
	return
}

// Extract updates the state with ev and writes its Dim features into out
// (which must hold at least Dim values). Values are finite and mostly in
// [0, 1]; counts are log-scaled.
func (x *Extractor) Extract(ev *event.File, out []float32) {
	out = out[:Dim]
	clear(out)
	f := ev.Flags
	sampled := f&event.FileFlagSampled != 0
	isDir := f&event.FileFlagDir != 0
	text, script, exec, compressed, media, document := magicClass(ev.Magic)
	if !sampled {
		text, script, exec, compressed, media, document = false, false, false, false, false, false
	}
	parsed := f&event.FileFlagExecParsed != 0

	out[0] = b2f(ev.Op == event.FileCreate)
	out[1] = b2f(ev.Op == event.FileWrite)
	out[2] = b2f(ev.Op == event.FileRename)
	out[3] = b2f(ev.Op == event.FileRemove)
	out[4] = b2f(ev.Op == event.FileChmod)
	out[5] = b2f(isDir)
	if ev.Size > 0 {
		out[6] = clamp01(float32(math.Log2(1+float64(ev.Size)) / 40))
	}
	out[7] = b2f(sampled)
	highEnt := false
	if sampled && ev.SampleLen > 0 {
		out[8] = clamp01(ev.Entropy / 8)
		out[9] = clamp01(ev.PrintableFrac)
		out[10] = clamp01(ev.ZeroFrac)
		out[11] = clamp01(ev.HighFrac)
		if ev.ChiSquare > 0 {
			out[12] = clamp01(float32(math.Log1p(float64(ev.ChiSquare)/float64(ev.SampleLen)) / math.Log(256)))
		}
		out[13] = clamp01(ev.Base64Frac)
		out[14] = b2f(f&event.FileFlagMagicMismatch != 0)
		out[15] = b2f(ev.Magic == event.MagicUnknown)
		highEnt = ev.Entropy >= HighEntropy && !compressed && !media && !document
	}
	out[16] = b2f(text)
	out[17] = b2f(script)
	out[18] = b2f(exec)
	out[19] = b2f(compressed)
	out[20] = b2f(media)
	out[21] = b2f(document)
	out[22] = b2f(f&event.FileFlagExecutable != 0)
	out[23] = b2f(parsed)
	if parsed {
		out[39] = clamp01((ev.ExecSectionEntropy - PackedExecEntropy) / 0.7)
		out[24] = clamp01(float32(math.Log2(1+float64(ev.Sections)) / 16))
		out[25] = clamp01(float32(math.Log2(1+float64(ev.Imports)) / 16))
		out[26] = b2f(ev.Imports <= 4)
		out[27] = clamp01(ev.ExecSectionEntropy / 8)
		out[28] = clamp01(ev.MaxSectionEntropy / 8)
		out[29] = b2f(ev.ExecFlags&event.ExecWX != 0)
		out[30] = b2f(ev.ExecFlags&event.ExecEntryOutside != 0)
		out[31] = b2f(ev.Sections == 0)
	}
	out[32] = b2f(f&event.FileFlagExecBroken != 0)
	if script && sampled {
		// A script that carries binary data (gzexe, shar-like droppers):
		// bytes >= 0x80 (random data: half of them) or control characters
		// (random data: about 12%; text: none).
		ctrl := 1 - ev.PrintableFrac - ev.HighFrac
		out[33] = clamp01(max(ev.HighFrac/0.4, ctrl/0.02))
	}
	if sampled && ev.SampleLen > 0 && (script || scriptExts[strings.ToLower(ext(ev.Path))]) {
		out[40] = clamp01((ev.Base64Frac - ScriptBase64Frac) / 0.4)
	}
	out[36] = b2f(highEnt)
	base := ev.Path[strings.LastIndexByte(ev.Path, '/')+1:]
	out[37] = b2f(len(base) > 1 && base[0] == '.')
	if ev.Writes > 0 {
		out[38] = clamp01(float32(math.Log2(1+float64(ev.Writes)) / 16))
	}

	// Tree state.
	t := x.tree(ev.Root, ev.TimeNs)
	dt := float64(ev.TimeNs-t.lastNs) / 1e9
	if dt < 0 {
		dt = 0 // out-of-order event: no decay, no time travel
	} else {
		t.lastNs = ev.TimeNs
	}
	content := sampled && !isDir && (ev.Op == event.FileCreate || ev.Op == event.FileWrite || ev.Op == event.FileRename)
	var newExt, extChanged bool
	if ev.Path != "" && !isDir && ev.Op != event.FileRemove && ev.Op != event.FileChmod {
		newExt = !t.seen(fnvLower(ext(ev.Path)))
	}
	if ev.Op == event.FileRename && ev.Path != "" && ev.OldPath != "" && !isDir {
		extChanged = !strings.EqualFold(ext(ev.Path), ext(ev.OldPath))
	}
	out[34] = b2f(newExt)
	out[35] = b2f(extChanged)
	var inc [nCounters]float64
	inc[cEvents] = 1
	if content {
		inc[cContent] = 1
		if ev.Op != event.FileRename || ev.Writes > 0 {
			inc[cWrites] = 1
		}
	}
	if ev.Op == event.FileCreate {
		inc[cCreates] = 1
	}
	if ev.Op == event.FileRename {
		inc[cRenames] = 1
	}
	if extChanged {
		inc[cExtChange] = 1
	}
	if ev.Op == event.FileRemove {
		inc[cRemoves] = 1
	}
	if newExt {
		inc[cNewExt] = 1
	}
	if highEnt && content {
		inc[cHighEnt] = 1
	}
	if out[14] == 1 {
		inc[cMismatch] = 1
	}
	o := nEvent
	for w, tau := range Windows {
		d := 1.0
		if dt > 0 {
			d = math.Exp(-dt / tau)
		}
		c := &t.c[w]
		for i := range c {
			c[i] = c[i]*d + inc[i]
		}
		for i := 0; i < nRate-1; i++ {
			out[o+i] = float32(math.Log1p(c[i]) / 10)
		}
		if c[cContent] > 0.5 {
			out[o+nRate-1] = clamp01(float32(c[cHighEnt] / c[cContent]))
		}
		o += nRate
	}
}
