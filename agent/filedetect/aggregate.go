package filedetect

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Context keys the fileactivity plugin adds to sdk.Anomaly.Context (see
// plugins/fileactivity; repeated here because the agent imports no plugin).
const (
	ctxTimeNs       = "ts_ns"
	ctxOldPath      = "old_path"
	ctxRoot         = "root"
	ctxOp           = "op"
	ctxMagic        = "magic"
	ctxEntropy      = "entropy"
	ctxHighEntropy  = "high_entropy"
	ctxExtChanged   = "ext_changed"
	ctxKind         = "kind"
	ctxModel        = "model"
	ctxModelVersion = "model_version"
	ctxModelDigest  = "model_digest"
	kindBurst       = "burst"
)

// AggregatorConfig tunes how anomalous file events become findings.
type AggregatorConfig struct {
	// Window is the span (event time) of one burst finding per watched
	// tree. Default 30 s.
	Window time.Duration
	// BurstMin is the number of anomalous events of a tree within Window
	// (at least one of them a burst anomaly, i.e. driven by the tree's
	// activity rates) from which they are reported together as one burst
	// finding. Fewer burst anomalies are the noise of a model calibrated at
	// a 0.1% per-event false-positive rate and are not reported. Default 20.
	BurstMin uint64
	// FileMinRatio is the score/threshold ratio a content anomaly needs to
	// be reported alone as a file finding (when its tree is not bursting).
	// Default 1.5 (medium severity).
	FileMinRatio float64
	// FileAlwaysRatio is the ratio from which a content anomaly is reported
	// on its own even inside a burst (a packed executable dropped during mass
	// activity). Default 10 (critical).
	FileAlwaysRatio float64
	// Hold delays a file finding (wall clock) so that a burst starting in
	// the same tree can absorb it. Default 2 s; only with UpdateEvery > 0.
	Hold time.Duration
	// UpdateEvery, when > 0 (live watching), emits a burst finding
	// FirstAfter after it qualified and then at most this often while it
	// grows. 0 (offline scans): findings are emitted when their window
	// closes or at Flush.
	UpdateEvery time.Duration
	FirstAfter  time.Duration // default 1 s
	// MaxOpen bounds the trees with open state and the held file anomalies
	// per tree. Default 1024.
	MaxOpen int
	// EventTime stamps findings with their last event's time instead of the
	// wall clock (offline scans: reproducible output).
	EventTime bool
	// Now is the wall clock (tests).
	Now func() time.Time
}

func (c *AggregatorConfig) defaults() {
	if c.Window <= 0 {
		c.Window = 30 * time.Second
	}
	if c.BurstMin == 0 {
		c.BurstMin = 20
	}
	if c.FileMinRatio <= 0 {
		c.FileMinRatio = 1.5
	}
	if c.FileAlwaysRatio <= 0 {
		c.FileAlwaysRatio = 10
	}
	if c.Hold <= 0 {
		c.Hold = 2 * time.Second
	}
	if c.FirstAfter <= 0 {
		c.FirstAfter = time.Second
	}
	if c.MaxOpen <= 0 {
		c.MaxOpen = 1024
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// fileAnomaly is one anomaly with the facts the aggregator uses, from the
// plugin's context and, where the context is slim (burst anomalies), from the
// agent's own copy of the event.
type fileAnomaly struct {
	ts                  int64
	root, path, oldPath string
	op                  string
	burst               bool
	extChanged, highEnt bool
	magic, entropy      string
	score, thr          float32
	top                 []sdk.Contribution
	model               *wirev1.ModelRef // nil: the last model seen
}

func (fa *fileAnomaly) ratio() float64 {
	if fa.thr > 0 {
		return float64(fa.score) / float64(fa.thr)
	}
	return math.Inf(1)
}

// best remembers the largest anomaly of a finding: its score and, from the
// strongest anomaly that carries them (the plugin sends top features only
// with the strongest burst anomaly of a tree per call), the top features and
// the facts for the summary.
type best struct {
	ratio, score, thr float64
	top               []sdk.Contribution
	topRatio          float64
	model             *wirev1.ModelRef
	magic, entropy    string
	op, oldPath       string
}

func (b *best) add(fa *fileAnomaly) {
	ratio := fa.ratio()
	if b.model == nil || ratio > b.ratio {
		b.ratio, b.score, b.thr, b.model = ratio, float64(fa.score), float64(fa.thr), fa.model
		b.magic, b.entropy, b.op, b.oldPath = fa.magic, fa.entropy, fa.op, fa.oldPath
	}
	if len(fa.top) > 0 && (len(b.top) == 0 || ratio > b.topRatio) {
		b.top, b.topRatio = fa.top, ratio
	}
}

// fileAgg is one file's held anomalies.
type fileAgg struct {
	path        string
	first, last int64
	count       uint64
	arrived     time.Time
	best        best
}

// treeAgg is the open state of one watched tree within one window.
type treeAgg struct {
	root        string
	first, last int64
	count       uint64 // anomalous events
	bursts      uint64 // of which burst anomalies
	creates     uint64
	writes      uint64
	renames     uint64
	extRenames  uint64
	removes     uint64
	highEnt     uint64
	wiped       uint64            // writes that left constant bytes or nothing (wipers)
	exts        map[string]uint64 // extensions that renames changed to
	dir         string            // deepest common folder of the anomalous paths
	best        best              // largest burst anomaly (else largest of any kind)
	bestAny     best
	files       map[string]*fileAgg
	filesOver   uint64 // held file anomalies beyond MaxOpen

	burst    bool
	burstAt  time.Time // wall time it qualified
	lastEmit time.Time
	emitted  uint64
}

// Aggregator turns the fileactivity plugin's anomalies into findings: per
// watched tree and window, the anomalies form one burst finding with counts
// once there are BurstMin of them (mass renaming, encryption, deletion);
// otherwise each file whose content anomaly is strong enough (FileMinRatio)
// is reported with its path. Weaker isolated anomalies are counted, not
// reported.
type Aggregator struct {
	cfg   AggregatorConfig
	mu    sync.Mutex
	open  map[string]*treeAgg
	model *wirev1.ModelRef // the last model named by an anomaly

	anomalies, fileFindings, burstFindings, suppressed uint64
}

// NewAggregator returns an empty aggregator.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	cfg.defaults()
	return &Aggregator{cfg: cfg, open: map[string]*treeAgg{}}
}

// AggregatorStats are the aggregator's counters.
type AggregatorStats struct {
	Anomalies, FileFindings, BurstFindings, Suppressed uint64
}

// Stats returns a snapshot of the counters.
func (a *Aggregator) Stats() AggregatorStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AggregatorStats{a.anomalies, a.fileFindings, a.burstFindings, a.suppressed}
}

// Add merges one anomaly as the plugin reported it (with a full context)
// and returns findings that are due (a window rolled over, a tree evicted).
func (a *Aggregator) Add(an *sdk.Anomaly) []*wirev1.Finding {
	return a.AddEvent(an, nil)
}

// AddEvent is Add for an anomaly about ev, the event the agent sent to the
// plugin (nil: unknown): what the plugin's context lacks (slim burst
// anomalies carry only their kind and flags) is taken from the event.
func (a *Aggregator) AddEvent(an *sdk.Anomaly, ev *event.File) []*wirev1.Finding {
	c := an.Context
	fa := fileAnomaly{score: an.Score, thr: an.Threshold, top: an.TopFeatures,
		burst: c[ctxKind] == kindBurst, extChanged: c[ctxExtChanged] == "1", highEnt: c[ctxHighEntropy] == "1"}
	if v, ok := c[ctxTimeNs]; ok {
		fa.ts, _ = strconv.ParseInt(v, 10, 64)
	} else if ev != nil {
		fa.ts = ev.TimeNs
	}
	fa.root, fa.path, fa.oldPath = c[ctxRoot], c[sdk.ContextPath], c[ctxOldPath]
	fa.op, fa.magic, fa.entropy = c[ctxOp], c[ctxMagic], c[ctxEntropy]
	if ev != nil {
		if _, ok := c[ctxRoot]; !ok {
			fa.root = event.SafePath(ev.Root)
		}
		if _, ok := c[sdk.ContextPath]; !ok {
			p := ev.Path
			if p == "" {
				p = ev.OldPath
			}
			fa.path = event.SafePath(p)
			if ev.OldPath != "" {
				fa.oldPath = event.SafePath(ev.OldPath)
			}
		}
		if fa.op == "" {
			fa.op = ev.Op.String()
		}
		if fa.magic == "" && ev.Flags&event.FileFlagSampled != 0 {
			fa.magic = ev.Magic.String()
			fa.entropy = strconv.FormatFloat(float64(ev.Entropy), 'f', 2, 32)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if name, ok := c[ctxModel]; ok {
		if m := a.model; m == nil || m.Name != name || m.Digest != c[ctxModelDigest] || strconv.FormatUint(m.Version, 10) != c[ctxModelVersion] {
			v, _ := strconv.ParseUint(c[ctxModelVersion], 10, 64)
			a.model = &wirev1.ModelRef{Name: name, Version: v, Digest: c[ctxModelDigest], Detector: DetectorName}
		}
	}
	fa.model = a.model
	if fa.model == nil {
		fa.model = &wirev1.ModelRef{Detector: DetectorName}
	}
	return a.add(&fa)
}

func (a *Aggregator) add(fa *fileAnomaly) []*wirev1.Finding {
	ts, root, p := fa.ts, fa.root, fa.path
	a.anomalies++
	var out []*wirev1.Finding
	g := a.open[root]
	if g != nil && ts-g.first > int64(a.cfg.Window) {
		out = append(out, a.finish(g)...)
		delete(a.open, root)
		g = nil
	}
	if g == nil {
		if len(a.open) >= a.cfg.MaxOpen {
			out = append(out, a.evictOldest()...)
		}
		g = &treeAgg{root: root, first: ts, last: ts, exts: map[string]uint64{}, files: map[string]*fileAgg{}, dir: path.Dir(p)}
		a.open[root] = g
	}
	g.count++
	g.first, g.last = min(g.first, ts), max(g.last, ts)
	if fa.burst {
		g.bursts++
	}
	switch fa.op {
	case "create":
		g.creates++
	case "write":
		g.writes++
	case "rename":
		g.renames++
	case "remove":
		g.removes++
	}
	if fa.extChanged {
		g.extRenames++
		if len(g.exts) < 64 {
			g.exts[extOf(p)]++
		}
	}
	if fa.highEnt {
		g.highEnt++
	}
	if fa.op == "write" && wipedContent(fa.magic, fa.entropy) {
		g.wiped++
	}
	g.dir = commonDir(g.dir, parentDir(p))
	if fa.burst {
		g.best.add(fa)
	}
	g.bestAny.add(fa)
	if !g.burst && g.count >= a.cfg.BurstMin && g.bursts > 0 {
		g.burst, g.burstAt = true, a.cfg.Now()
	}
	if !fa.burst && (!g.burst || fa.ratio() >= a.cfg.FileAlwaysRatio) {
		f := g.files[p]
		if f == nil {
			if len(g.files) >= a.cfg.MaxOpen {
				g.filesOver++
				return out
			}
			f = &fileAgg{path: p, first: ts, last: ts, arrived: a.cfg.Now()}
			g.files[p] = f
		}
		f.count++
		f.first, f.last = min(f.first, ts), max(f.last, ts)
		f.best.add(fa)
	}
	return out
}

// wipedContent reports whether a sampled file's content is gone: empty, or
// one repeated byte (entropy under 1 bit per byte), what wipers that
// overwrite with zeros or a fill byte leave.
func wipedContent(magic, entropy string) bool {
	if magic == "empty" {
		return true
	}
	e, err := strconv.ParseFloat(entropy, 64)
	return err == nil && entropy != "" && e < 1
}

// parentDir is path.Dir without allocating for clean absolute paths (what
// the watcher reports); anything else goes through path.Dir.
func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	switch {
	case i > 0 && i < len(p)-1 && p[0] == '/' && !strings.Contains(p, "//") && !strings.Contains(p, "/."):
		return p[:i]
	case i == 0 && len(p) > 1 && p[1] != '.':
		return "/"
	}
	return path.Dir(p)
}

func (a *Aggregator) evictOldest() []*wirev1.Finding {
	var old *treeAgg
	for _, g := range a.open {
		if old == nil || g.last < old.last {
			old = g
		}
	}
	if old == nil {
		return nil
	}
	delete(a.open, old.root)
	return a.finish(old)
}

// finish returns the final findings of a closing tree window.
func (a *Aggregator) finish(g *treeAgg) []*wirev1.Finding {
	var out []*wirev1.Finding
	if g.burst {
		if g.count != g.emitted {
			out = append(out, a.emitBurst(g))
		}
		a.dropWeakFiles(g)
	}
	for _, k := range sortedFiles(g) {
		if f := a.emitFile(g, g.files[k]); f != nil {
			out = append(out, f)
		}
		delete(g.files, k)
	}
	if !g.burst {
		a.suppressed += g.bursts // too few to be a burst: noise
	}
	g.bursts = 0
	return out
}

func sortedFiles(g *treeAgg) []string {
	keys := make([]string, 0, len(g.files))
	for k := range g.files {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		fi, fj := g.files[keys[i]], g.files[keys[j]]
		if fi.first != fj.first {
			return fi.first < fj.first
		}
		return keys[i] < keys[j]
	})
	return keys
}

// Tick emits what is due: with UpdateEvery (live), burst findings (first
// after FirstAfter, then updates) and file findings held for Hold; tree
// windows that closed before event time nowEvent (ns; 0: none) are closed.
func (a *Aggregator) Tick(nowEvent int64) []*wirev1.Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*wirev1.Finding
	now := a.cfg.Now()
	for _, k := range a.sortedRoots() {
		g := a.open[k]
		if nowEvent > 0 && nowEvent-g.first > int64(a.cfg.Window) {
			out = append(out, a.finish(g)...)
			delete(a.open, k)
			continue
		}
		if a.cfg.UpdateEvery <= 0 {
			continue
		}
		if g.burst {
			a.dropWeakFiles(g)
			if g.count != g.emitted && ((g.lastEmit.IsZero() && now.Sub(g.burstAt) >= a.cfg.FirstAfter) ||
				(!g.lastEmit.IsZero() && now.Sub(g.lastEmit) >= a.cfg.UpdateEvery)) {
				out = append(out, a.emitBurst(g))
			}
		}
		for _, p := range sortedFiles(g) {
			f := g.files[p]
			if now.Sub(f.arrived) >= a.cfg.Hold {
				if fd := a.emitFile(g, f); fd != nil {
					out = append(out, fd)
				}
				delete(g.files, p)
			}
		}
	}
	return out
}

// dropWeakFiles forgets the held file anomalies a burst absorbs (all but
// those of at least FileAlwaysRatio).
func (a *Aggregator) dropWeakFiles(g *treeAgg) {
	for p, f := range g.files {
		if f.best.ratio < a.cfg.FileAlwaysRatio {
			delete(g.files, p)
		}
	}
}

// Flush closes every open window and emits what qualifies.
func (a *Aggregator) Flush() []*wirev1.Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*wirev1.Finding
	for _, k := range a.sortedRoots() {
		out = append(out, a.finish(a.open[k])...)
		delete(a.open, k)
	}
	return out
}

func (a *Aggregator) sortedRoots() []string {
	keys := make([]string, 0, len(a.open))
	for k := range a.open {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		gi, gj := a.open[keys[i]], a.open[keys[j]]
		if gi.first != gj.first {
			return gi.first < gj.first
		}
		return keys[i] < keys[j]
	})
	return keys
}

func (a *Aggregator) stamp(last int64) int64 {
	if a.cfg.EventTime {
		return last
	}
	return a.cfg.Now().UnixNano()
}

func topFeatures(top []sdk.Contribution) []*wirev1.FeatureContribution {
	out := make([]*wirev1.FeatureContribution, 0, len(top))
	for _, c := range top {
		out = append(out, &wirev1.FeatureContribution{Name: c.Name, Contribution: round(float64(c.Contribution))})
	}
	return out
}

func (a *Aggregator) emitFile(g *treeAgg, f *fileAgg) *wirev1.Finding {
	if f.best.ratio < a.cfg.FileMinRatio {
		a.suppressed += f.count
		return nil
	}
	a.fileFindings++
	return &wirev1.Finding{
		Detector:          DetectorName,
		TimeUnixNano:      a.stamp(f.last),
		FirstSeenUnixNano: f.first,
		LastSeenUnixNano:  f.last,
		Count:             f.count,
		Severity:          detect.Severity(f.best.ratio),
		Score:             round(f.best.score),
		Threshold:         round(f.best.thr),
		Model:             f.best.model,
		Context:           &wirev1.FindingContext{Path: wirev1.Truncate(f.path, wirev1.MaxPathLen), Proto: "file"},
		TopFeatures:       topFeatures(f.best.top),
		Summary:           fileSummary(f),
	}
}

func (a *Aggregator) emitBurst(g *treeAgg) *wirev1.Finding {
	g.lastEmit, g.emitted = a.cfg.Now(), g.count
	b := &g.best
	if b.model == nil {
		b = &g.bestAny
	}
	a.burstFindings++
	sev := detect.Severity(b.ratio)
	if g.count >= 100 && sev < wirev1.Severity_SEVERITY_HIGH {
		sev = wirev1.Severity_SEVERITY_HIGH
	} else if sev < wirev1.Severity_SEVERITY_MEDIUM {
		sev = wirev1.Severity_SEVERITY_MEDIUM
	}
	return &wirev1.Finding{
		Detector:          DetectorName,
		TimeUnixNano:      a.stamp(g.last),
		FirstSeenUnixNano: g.first,
		LastSeenUnixNano:  g.last,
		Count:             g.count,
		Severity:          sev,
		Score:             round(b.score),
		Threshold:         round(b.thr),
		Model:             b.model,
		Context:           &wirev1.FindingContext{Path: wirev1.Truncate(g.dir, wirev1.MaxPathLen), Proto: "file"},
		TopFeatures:       topFeatures(b.top),
		Summary:           burstSummary(g),
	}
}

// burstSummary describes a burst: "312 files renamed to .locked with
// high-entropy content under /srv/share in 8 s".
func burstSummary(g *treeAgg) string {
	n := g.count
	dur := time.Duration(g.last - g.first)
	span := fmt.Sprintf("%.0f s", dur.Seconds())
	switch {
	case dur < time.Second:
		span = fmt.Sprintf("%d ms", dur.Milliseconds())
	case dur < 10*time.Second:
		span = fmt.Sprintf("%.1f s", dur.Seconds())
	}
	under := g.dir
	if under == "" || under == "." {
		under = g.root
	}
	under = shortPath(under)
	var s string
	switch {
	case g.removes*2 >= n:
		s = fmt.Sprintf("%d files deleted under %s in %s", g.removes, under, span)
	case g.extRenames*2 >= n:
		ext, en := "", uint64(0)
		for e, c := range g.exts {
			if c > en || (c == en && e < ext) {
				ext, en = e, c
			}
		}
		to := "a new extension"
		if ext != "" {
			to = "." + ext
		}
		s = fmt.Sprintf("%d files renamed to %s", g.extRenames, to)
		if g.highEnt*2 >= g.extRenames {
			s += " with high-entropy content"
		}
		s += fmt.Sprintf(" under %s in %s", under, span)
	case g.wiped*2 >= n:
		s = fmt.Sprintf("%d files overwritten with constant bytes or emptied under %s in %s", g.wiped, under, span)
	case g.highEnt*2 >= n:
		s = fmt.Sprintf("%d files written with high-entropy content under %s in %s", g.highEnt, under, span)
	default:
		s = fmt.Sprintf("%d anomalous file events under %s in %s", n, under, span)
	}
	s += fmt.Sprintf(" (anomalous events %d: creates %d, writes %d, renames %d, removes %d, high-entropy %d)",
		n, g.creates, g.writes, g.renames, g.removes, g.highEnt)
	return wirev1.Truncate(s, wirev1.MaxSummaryLen)
}

// hints explain the usual top features of a single anomalous file.
var hints = map[string]string{
	"exec_section_entropy":     "executable code looks packed or encrypted",
	"exec_max_section_entropy": "a section of the executable looks packed or encrypted",
	"packed_script":            "script carrying binary data (self-extracting or packed)",
	"base64_frac":              "long base64 runs (obfuscated content)",
	"magic_mismatch":           "content does not match the file's extension",
	"high_entropy_content":     "high-entropy content",
	"exec_broken":              "executable headers do not parse",
	"exec_wx":                  "writable and executable section",
	"exec_few_imports":         "executable with almost no imports",
	"exec_entry_outside":       "entry point outside the code",
}

func fileSummary(f *fileAgg) string {
	c := &f.best
	var b strings.Builder
	b.WriteString("Anomalous file ")
	b.WriteString(shortPath(f.path))
	var facts []string
	if c.magic != "" {
		facts = append(facts, c.magic)
	}
	if c.entropy != "" {
		facts = append(facts, "entropy "+c.entropy)
	}
	if op := c.op; op != "" {
		o := op
		if op == "rename" && c.oldPath != "" {
			o = "renamed from " + shortPath(c.oldPath)
		}
		facts = append(facts, o)
	}
	if len(facts) > 0 {
		b.WriteString(" (" + strings.Join(facts, ", ") + ")")
	}
	for _, t := range f.best.top {
		if h, ok := hints[t.Name]; ok {
			b.WriteString(": " + h)
			break
		}
	}
	return wirev1.Truncate(b.String(), wirev1.MaxSummaryLen)
}

// maxSummaryPath bounds a path quoted in a summary, so that the rest of the
// summary (what happened to the file) fits in wirev1.MaxSummaryLen too. The
// paths come escaped (event.SafePath: up to 4 bytes per byte of the name).
const maxSummaryPath = 1024

// shortPath cuts the middle out of a path longer than maxSummaryPath,
// marking the cut with wirev1.Ellipsis: its start and its end (the file's
// name) stay readable.
func shortPath(p string) string {
	if len(p) <= maxSummaryPath {
		return p
	}
	room := maxSummaryPath - len(wirev1.Ellipsis)
	head := wirev1.Truncate(p, room/4+len(wirev1.Ellipsis)) // ends with the mark
	i := len(p) - (room - room/4)
	for j := 0; j < utf8.UTFMax-1 && i < len(p) && !utf8.RuneStart(p[i]); j++ {
		i++
	}
	return head + p[i:]
}

// commonDir is the deepest folder containing both a and b.
func commonDir(a, b string) string {
	if a == b {
		return a
	}
	if len(b) > len(a) && strings.HasPrefix(b, a) && b[len(a)] == '/' {
		return a // b is below a: the common case in a burst
	}
	// The longest common prefix of whole path elements.
	n := min(len(a), len(b))
	last := -1 // index of the last '/' of the common prefix
	i := 0
	for ; i < n && a[i] == b[i]; i++ {
		if a[i] == '/' {
			last = i
		}
	}
	if i == n && n > 0 && (len(a) == n || a[n] == '/') && (len(b) == n || b[n] == '/') {
		return a[:n]
	}
	if last <= 0 {
		if strings.HasPrefix(a, "/") {
			return "/"
		}
		return ""
	}
	return a[:last]
}

func extOf(p string) string {
	base := path.Base(p)
	i := strings.LastIndexByte(base, '.')
	if i <= 0 || i == len(base)-1 || len(base)-i-1 > 16 {
		return ""
	}
	return base[i+1:]
}

// round keeps 6 significant digits of v made finite for the wire
// (wirev1.FiniteScore: the fileactivity plugin sends a NaN score as +Inf,
// the most anomalous, and the server refuses a number that is not finite).
func round(v float64) float64 {
	v = wirev1.FiniteScore(v)
	if v == 0 || v == wirev1.MaxScore || v == -wirev1.MaxScore {
		return v
	}
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 6, 64), 64)
	return r
}
