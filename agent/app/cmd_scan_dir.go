package app

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/filedetect"
)

// extendScanDir adds `--dir DIR` to the scan command (cmd_scan.go calls it
// on its command): with --dir, scan scores the files of a folder offline
// with the fileactivity detector plugin instead of replaying a capture. The
// flags --bundle, --json, --plugin, --model-dir and --plugin-dir keep their
// meaning (for the fileactivity plugin and bundle).
func extendScanDir(cmd *cobra.Command, g *Globals) {
	var dir string
	var pace time.Duration
	cmd.Flags().StringVar(&dir, "dir", "", "folder whose files to score (fileactivity detector)")
	cmd.Flags().DurationVar(&pace, "pace", filedetect.DefaultPace, "with --dir: event-time spacing of the files (replayed as creates in modification-time order)")
	cmd.Use = "scan (--pcap FILE | --dir DIR) [--bundle FILE] [--json]"
	cmd.Short = "Score a capture file or a folder offline (no server): findings and a summary"
	cmd.Long += "\n\nWith --dir, scan scores the regular files below DIR with the fileactivity detector plugin\n" +
		"(vigil-detector-fileactivity and models/fileactivity-*.vgb next to the binary): each file is sampled\n" +
		"like the watcher does and scored as a create, in modification-time order."
	orig := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if dir == "" {
			return orig(c, args)
		}
		if p, _ := c.Flags().GetString("pcap"); p != "" {
			return &exitError{code: 2, msg: "scan: give --pcap FILE or --dir DIR, not both"}
		}
		return runScanDir(c, g, dir, pace)
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

func runScanDir(c *cobra.Command, g *Globals, dir string, pace time.Duration) error {
	fl := c.Flags()
	bundlePath, _ := fl.GetString("bundle")
	asJSON, _ := fl.GetBool("json")
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
			return fmt.Errorf("scan: %w", err)
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
			return fmt.Errorf("scan: %w", err)
		}
		inst.Bundle = bi
	}
	if inst.Bundle.Path == "" {
		return fmt.Errorf("scan: %w", filedetect.ErrNoBundle)
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
	}, Findings: []FindingJSON{}}
	if secs > 0 {
		rep.Summary.FilesPerSec = float64(res.Files) / secs
	}
	for i, f := range res.Findings {
		f.Seq = uint64(i + 1)
		rep.Findings = append(rep.Findings, NewFindingJSON(f))
	}
	if asJSON {
		enc := json.NewEncoder(g.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
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
	if len(rep.Findings) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tPATH\tCOUNT\tSCORE/THR\tTOP FEATURE\tSUMMARY")
	for _, f := range rep.Findings {
		ratio := 0.0
		if f.Threshold > 0 {
			ratio = f.Score / f.Threshold
		}
		top := "-"
		if len(f.TopFeatures) > 0 {
			top = f.TopFeatures[0].Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1fx\t%s\t%s\n", f.Severity, f.Context.Path, f.Count, ratio, top, f.Summary)
	}
	_ = tw.Flush()
}
