package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/filedetect"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// extendScanDir adds `--dir DIR` to the scan command (cmd_scan.go calls it
// on its command): with --dir, scan scores the files of a folder offline
// with the fileactivity detector plugin instead of replaying a capture. The
// flags --bundle, --json, --plugin, --model-dir and --plugin-dir keep their
// meaning (for the fileactivity plugin and bundle).
func extendScanDir(cmd *cobra.Command, g *Globals) {
	var dir, trace string
	var pace time.Duration
	var maxEvents int
	cmd.Flags().StringVar(&dir, "dir", "", "folder whose files to score (fileactivity detector)")
	cmd.Flags().DurationVar(&pace, "pace", filedetect.DefaultPace, "with --dir: event-time spacing of the files (replayed as creates in modification-time order)")
	cmd.Flags().StringVar(&trace, "trace", "", "file-event trace to replay (written by vigil-agent record; fileactivity detector)")
	cmd.Flags().IntVar(&maxEvents, "max-events", 5_000_000, "with --trace: events replayed at most")
	cmd.Use = "scan (--pcap FILE | --dir DIR | --trace FILE) [--bundle FILE] [--json]"
	cmd.Short = "Score a capture file, a folder or a file-event trace offline (no server): findings and a summary"
	cmd.Long += "\n\nWith --dir, scan scores the regular files below DIR with the fileactivity detector plugin\n" +
		"(vigil-detector-fileactivity and models/fileactivity-*.vgb next to the binary): each file is sampled\n" +
		"like the watcher does and scored as a create, in modification-time order.\n\n" +
		"With --trace, scan replays a file-event trace recorded by `vigil-agent record` through the fileactivity\n" +
		"plugin and the agent's finding rules in the trace's own time: the findings a bundle would have raised\n" +
		"on that activity (to check a model on a site's traces before rolling it out)."
	orig := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		p, _ := c.Flags().GetString("pcap")
		n := 0
		for _, v := range []string{p, dir, trace} {
			if v != "" {
				n++
			}
		}
		switch {
		case n > 1:
			return &exitError{code: 2, msg: "scan: give one of --pcap FILE, --dir DIR or --trace FILE"}
		case dir != "":
			return runScanDir(c, g, dir, pace)
		case trace != "":
			return runScanTrace(c, g, trace, maxEvents)
		}
		return orig(c, args)
	}
}

// DirScanReport is what `scan --dir --json` prints.
type DirScanReport struct {
	Summary  DirScanSummary `json:"summary"`
	Findings []FindingJSON  `json:"findings"`
}

// DirScanSummary sums up a folder scan.
type DirScanSummary struct {
	Files          uint64  `json:"files"`
	Seconds        float64 `json:"seconds"`
	Findings       int     `json:"findings"`
	Skipped        uint64  `json:"skipped"`
	Denied         uint64  `json:"denied"` // files and folders unreadable for lack of permission (also in skipped)
	FilesPerSec    float64 `json:"files_per_second"`
	Anomalies      uint64  `json:"anomalies"`
	EventsLost     uint64  `json:"events_lost"`
	PluginRestarts uint64  `json:"plugin_restarts"`
}

// fileInstallation finds the fileactivity plugin and bundle for scan --dir
// and --trace (flags --plugin, --bundle, --model-dir, --plugin-dir).
func fileInstallation(c *cobra.Command, g *Globals) (*filedetect.Installation, *slog.Logger, error) {
	fl := c.Flags()
	bundlePath, _ := fl.GetString("bundle")
	plugin, _ := fl.GetString("plugin")
	modelDirs, _ := fl.GetStringSlice("model-dir")
	pluginDirs, _ := fl.GetStringSlice("plugin-dir")
	log := g.Logger()
	if g.LogLevel == "" {
		l, _ := NewLogger(g.Stderr, g.LogFormat, "warn")
		log = l
	}
	var inst *filedetect.Installation
	var err error
	if plugin != "" && bundlePath != "" {
		inst = &filedetect.Installation{Plugin: plugin, ORTLib: os.Getenv("ONNXRUNTIME_LIB")}
	} else {
		inst, err = filedetect.Discover(detect.Search{ModelDirs: modelDirs, PluginDirs: pluginDirs})
		if err != nil {
			return nil, nil, fmt.Errorf("scan: %w", err)
		}
		if plugin != "" {
			inst.Plugin = plugin
		}
		for f, err := range inst.Skipped {
			log.Warn("bundle skipped", "file", f, "err", err)
		}
	}
	if bundlePath != "" {
		bi, err := filedetect.ReadBundleInfo(bundlePath)
		if err != nil {
			return nil, nil, fmt.Errorf("scan: %w", err)
		}
		inst.Bundle = bi
	}
	if inst.Bundle.Path == "" {
		return nil, nil, fmt.Errorf("scan: %w", filedetect.ErrNoBundle)
	}
	return inst, log, nil
}

func runScanDir(c *cobra.Command, g *Globals, dir string, pace time.Duration) error {
	asJSON, _ := c.Flags().GetBool("json")
	inst, log, err := fileInstallation(c, g)
	if err != nil {
		return err
	}
	cfg := filedetect.ScanConfig{
		Dir: dir, Plugin: inst.Plugin, Bundle: inst.Bundle, ORTLib: inst.ORTLib, StageBundle: true,
		Pace: pace, Logger: log,
	}
	if isTerminal(g.Stderr) {
		start := time.Now()
		cfg.Progress = func(done, total int) {
			fmt.Fprintf(g.Stderr, "\r%d/%d files %.0f/s ", done, total, float64(done)/max(time.Since(start).Seconds(), 1e-9))
		}
		defer fmt.Fprint(g.Stderr, "\r\033[K")
	}
	start := time.Now()
	res, err := filedetect.Scan(c.Context(), cfg)
	if err != nil {
		return err // already "scan: ..."
	}
	secs := time.Since(start).Seconds()
	rep := DirScanReport{Summary: DirScanSummary{
		Files: res.Files, Seconds: secs, Findings: len(res.Findings), Skipped: res.Skipped, Denied: res.Denied,
		Anomalies: res.Stats.Aggregator.Anomalies, EventsLost: res.Stats.Lost, PluginRestarts: res.Stats.Host.Restarts,
	}, Findings: offlineFindings(res.Findings)}
	if secs > 0 {
		rep.Summary.FilesPerSec = float64(res.Files) / secs
	}
	if asJSON {
		return writeJSON(g.Stdout, rep)
	}
	printDirScan(g.Stdout, dir, rep)
	return nil
}

func printDirScan(w io.Writer, dir string, rep DirScanReport) {
	s := rep.Summary
	fmt.Fprintf(w, "%s: %d files in %.2f s (%.0f files/s), %d skipped (%d permission denied), %d anomalous, %d findings",
		dir, s.Files, s.Seconds, s.FilesPerSec, s.Skipped, s.Denied, s.Anomalies, s.Findings)
	if s.EventsLost > 0 || s.PluginRestarts > 0 {
		fmt.Fprintf(w, " (plugin restarts %d, files not scored %d)", s.PluginRestarts, s.EventsLost)
	}
	fmt.Fprintln(w)
	printFindings(w, rep.Findings)
}

// printFindings prints file findings as a table (nothing if there are none).
func printFindings(w io.Writer, findings []FindingJSON) {
	if len(findings) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tPATH\tCOUNT\tSCORE/THR\tTOP FEATURE\tSUMMARY")
	for _, f := range findings {
		ratio := 0.0
		if f.Threshold > 0 {
			ratio = f.Score / f.Threshold
		}
		top := "-"
		if len(f.TopFeatures) > 0 {
			top = safeText(f.TopFeatures[0].Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1fx\t%s\t%s\n", f.Severity, safeText(f.Context.Path), f.Count, ratio, top, safeText(f.Summary))
	}
	_ = tw.Flush()
}

// TraceScanReport is what `scan --trace --json` prints.
type TraceScanReport struct {
	Summary  TraceScanSummary `json:"summary"`
	Findings []FindingJSON    `json:"findings"`
}

// TraceScanSummary sums up a trace replay.
type TraceScanSummary struct {
	Events         uint64  `json:"events"`
	TraceSeconds   float64 `json:"trace_seconds"` // from the first to the last event
	Seconds        float64 `json:"seconds"`       // wall time of the replay
	Findings       int     `json:"findings"`
	Anomalies      uint64  `json:"anomalies"`
	EventsLost     uint64  `json:"events_lost"`
	PluginRestarts uint64  `json:"plugin_restarts"`
	Reason         string  `json:"reason,omitempty"` // why the trace was not replayed to its end
}

func runScanTrace(c *cobra.Command, g *Globals, trace string, maxEvents int) error {
	asJSON, _ := c.Flags().GetBool("json")
	inst, log, err := fileInstallation(c, g)
	if err != nil {
		return err
	}
	cfg := filedetect.ScanConfig{Plugin: inst.Plugin, Bundle: inst.Bundle, ORTLib: inst.ORTLib, StageBundle: true, Logger: log}
	start := time.Now()
	res, err := filedetect.ScanTrace(c.Context(), cfg, trace, maxEvents)
	if err != nil {
		return err // already "scan: ..."
	}
	rep := TraceScanReport{Summary: TraceScanSummary{
		Events: res.Events, TraceSeconds: res.Seconds, Seconds: time.Since(start).Seconds(), Findings: len(res.Findings),
		Anomalies: res.Stats.Aggregator.Anomalies, EventsLost: res.Stats.Lost, PluginRestarts: res.Stats.Host.Restarts, Reason: res.Reason,
	}, Findings: offlineFindings(res.Findings)}
	if asJSON {
		return writeJSON(g.Stdout, rep)
	}
	s := rep.Summary
	fmt.Fprintf(g.Stdout, "%s: %d file events over %.1f s of recording, replayed in %.2f s, %d anomalous, %d findings",
		trace, s.Events, s.TraceSeconds, s.Seconds, s.Anomalies, s.Findings)
	if s.EventsLost > 0 || s.PluginRestarts > 0 {
		fmt.Fprintf(g.Stdout, " (plugin restarts %d, events not scored %d)", s.PluginRestarts, s.EventsLost)
	}
	if s.Reason != "" {
		fmt.Fprintf(g.Stdout, " (stopped early: %s)", s.Reason)
	}
	fmt.Fprintln(g.Stdout)
	printFindings(g.Stdout, rep.Findings)
	return nil
}

// offlineFindings numbers the findings of an offline file scan (they have
// no spool sequence) and converts them for output.
func offlineFindings(fs []*wirev1.Finding) []FindingJSON {
	out := []FindingJSON{}
	for i, f := range fs {
		f.Seq = uint64(i + 1)
		out = append(out, NewFindingJSON(f))
	}
	return out
}

// writeJSON prints v as indented JSON, with C1 and bidi controls in its
// strings escaped (escapeControls).
func writeJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err := w.Write(escapeControls(b.Bytes()))
	return err
}

// escapeControls rewrites the C1 controls (U+0080..U+009F: a raw U+009B is
// a CSI to many terminals) and bidi controls (U+202E reorders what a
// terminal shows) of encoding/json's output as \uXXXX escapes;
// encoding/json escapes only C0 (and U+2028, U+2029). The result is exact:
// JSON's syntax is ASCII, so these code points occur only inside strings,
// where the escape decodes to the same code point, and a consumer reads the
// same data, while `vigil-agent scan --json` piped to a terminal or a
// pager shows them as text.
func escapeControls(js []byte) []byte {
	if !bytes.ContainsFunc(js, jsonEscaped) {
		return js
	}
	out := make([]byte, 0, len(js)+32)
	for len(js) > 0 {
		r, n := utf8.DecodeRune(js)
		if jsonEscaped(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, js[:n]...)
		}
		js = js[n:]
	}
	return out
}

// jsonEscaped reports whether escapeControls escapes r.
func jsonEscaped(r rune) bool {
	return r >= 0x80 && r <= 0x9f || unicode.Is(unicode.Bidi_Control, r)
}
