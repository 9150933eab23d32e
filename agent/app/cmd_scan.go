package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/internal/termsafe"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func init() { Register(newScanCommand) }

// ScanReport is what `scan --json` prints.
type ScanReport struct {
	Summary  ScanSummary   `json:"summary"`
	Findings []FindingJSON `json:"findings"`
}

// ScanSummary sums up a scan.
type ScanSummary struct {
	Packets        uint64  `json:"packets"`
	Seconds        float64 `json:"seconds"`
	Findings       int     `json:"findings"`
	Decoded        uint64  `json:"decoded"`
	PacketsPerSec  float64 `json:"packets_per_second"`
	Anomalies      uint64  `json:"anomalies"`
	EventsLost     uint64  `json:"events_lost"`
	PluginRestarts uint64  `json:"plugin_restarts"`
}

// FindingJSON is a finding with the field names of DESIGN.md section 11.
type FindingJSON struct {
	ID          uint64        `json:"id"`
	AgentID     string        `json:"agent_id"`
	Entity      string        `json:"entity"`
	Detector    string        `json:"detector"`
	Time        time.Time     `json:"time"`
	FirstSeen   time.Time     `json:"first_seen"`
	LastSeen    time.Time     `json:"last_seen"`
	Count       uint64        `json:"count"`
	Severity    string        `json:"severity"`
	Score       float64       `json:"score"`
	Threshold   float64       `json:"threshold"`
	Model       ModelJSON     `json:"model"`
	Context     ContextJSON   `json:"context"`
	TopFeatures []FeatureJSON `json:"top_features"`
	Summary     string        `json:"summary"`
	Packets     uint64        `json:"packets"`
	Bytes       uint64        `json:"bytes"`
	// LeadIn is the source's traffic just before first_seen (wire
	// Finding.lead_in_*); absent when the detector reports none.
	LeadIn *LeadInJSON    `json:"lead_in,omitempty"`
	Extra  map[string]any `json:"-"`
}

// LeadInJSON is a finding's lead-in: the packets its source sent in the
// seconds before its first anomalous one (since Since).
type LeadInJSON struct {
	Since   time.Time `json:"since"`
	Packets uint64    `json:"packets"`
	Bytes   uint64    `json:"bytes"`
}

// ModelJSON names a model.
type ModelJSON struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Digest  string `json:"digest"`
}

// ContextJSON is a finding's context.
type ContextJSON struct {
	SrcIP   string `json:"src_ip"`
	DstIP   string `json:"dst_ip"`
	SrcPort uint32 `json:"src_port"`
	DstPort uint32 `json:"dst_port"`
	Proto   string `json:"proto"`
	Path    string `json:"path"`
	SrcMAC  string `json:"src_mac,omitempty"`
}

// FeatureJSON is one feature contribution.
type FeatureJSON struct {
	Name         string  `json:"name"`
	Contribution float64 `json:"contribution"`
}

// SeverityName is the lower-case severity name used in JSON.
func SeverityName(s wirev1.Severity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

// NewFindingJSON converts a wire finding.
func NewFindingJSON(f *wirev1.Finding) FindingJSON {
	out := FindingJSON{
		ID: f.GetSeq(), Detector: f.GetDetector(),
		Time:      time.Unix(0, f.GetTimeUnixNano()).UTC(),
		FirstSeen: time.Unix(0, f.GetFirstSeenUnixNano()).UTC(),
		LastSeen:  time.Unix(0, f.GetLastSeenUnixNano()).UTC(),
		Count:     f.GetCount(), Severity: SeverityName(f.GetSeverity()),
		Score: f.GetScore(), Threshold: f.GetThreshold(),
		Model:       ModelJSON{Name: f.GetModel().GetName(), Version: f.GetModel().GetVersion(), Digest: f.GetModel().GetDigest()},
		Summary:     f.GetSummary(),
		Packets:     f.GetPackets(),
		Bytes:       f.GetBytes(),
		TopFeatures: []FeatureJSON{},
	}
	if c := f.GetContext(); c != nil {
		out.Context = ContextJSON{SrcIP: c.GetSrcIp(), DstIP: c.GetDstIp(), SrcPort: c.GetSrcPort(), DstPort: c.GetDstPort(), Proto: c.GetProto(), Path: c.GetPath(),
			SrcMAC: c.GetSrcMac()}
	}
	for _, t := range f.GetTopFeatures() {
		out.TopFeatures = append(out.TopFeatures, FeatureJSON{Name: t.GetName(), Contribution: t.GetContribution()})
	}
	if f.GetLeadInPackets() > 0 && wirev1.ValidLeadIn(f) {
		out.LeadIn = &LeadInJSON{Since: time.Unix(0, f.GetLeadInUnixNano()).UTC(), Packets: f.GetLeadInPackets(), Bytes: f.GetLeadInBytes()}
	}
	return out
}

// scanRingSlots is the packet ring of an offline scan: four batches of the
// plugin host's default maximum (4096 packets), 1 MiB.
const scanRingSlots = 1 << 14

func newScanCommand(g *Globals) *cobra.Command {
	var (
		pcap, bundlePath, plugin string
		asJSON                   bool
		window                   time.Duration
		minPackets               uint64
		minSeverity              string
		persistWindows           int
		beaconIntervals          int
		calibrate                time.Duration
		modelDirs, pluginDirs    []string
		hashSeed                 uint64
	)
	cmd := &cobra.Command{
		Use:   "scan --pcap FILE [--bundle FILE] [--json]",
		Short: "Score a capture file offline (no server): findings and a summary",
		Long: "scan replays a pcap or pcapng file through the netflow detector plugin and prints the findings.\n" +
			"The plugin, the baseline bundles and ONNX Runtime are found next to the vigil-agent binary\n" +
			"(vigil-detector-netflow, models/*.vgb, lib/libonnxruntime.so), then in the configured directories.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pcap == "" {
				return &exitError{code: 2, msg: "scan: give --pcap FILE (or --dir DIR)"}
			}
			if b := beaconIntervals; b != 0 && b != -1 && (b < config.MinBeaconIntervals || b > config.MaxBeaconIntervals) {
				return &exitError{code: 2, msg: fmt.Sprintf("scan: --beacon-intervals %d: 0 (default), -1 (off), or %d to %d", b, config.MinBeaconIntervals, config.MaxBeaconIntervals)}
			}
			st, err := os.Stat(pcap)
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			// An offline scan's live heap is about 2 MB under 5 MB of
			// globals (gopacket's protocol tables), and the heap goal
			// counts the globals too: GOGC 25 keeps the goal near 4 MB
			// (about 1.5 MB less resident than GOGC 50, 4 MB less than the
			// default) for a few more collections, a few ms of CPU per
			// million packets. An operator's GOGC wins.
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(25)
			}
			log := g.Logger()
			if g.LogLevel == "" {
				l, _ := NewLogger(g.Stderr, g.LogFormat, "warn")
				log = l
			}
			minSev := wirev1.Severity_SEVERITY_UNSPECIFIED // the aggregator's default
			if minSeverity != "" {
				if minSev, err = detect.ParseSeverity(minSeverity); err != nil {
					return fmt.Errorf("scan: --min-severity: %w", err)
				}
			}
			s := detect.Search{ModelDirs: modelDirs, PluginDirs: pluginDirs}
			inst, err := detect.Discover(s)
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			if plugin != "" {
				inst.Plugin = plugin
			}
			for f, err := range inst.Skipped {
				log.Warn("bundle skipped", "file", f, "err", err)
			}
			var bundles []detect.BundleInfo
			if bundlePath != "" {
				bi, err := detect.ReadBundleInfo(bundlePath)
				if err != nil {
					return fmt.Errorf("scan: %w", err)
				}
				// The given bundle replaces the installed one of its feature set.
				for _, b := range inst.Bundles {
					if b.FeatureSet != bi.FeatureSet {
						bundles = append(bundles, b)
					}
				}
				bundles = append(bundles, bi)
			} else {
				bundles = inst.Bundles
			}
			if len(bundles) == 0 {
				return fmt.Errorf("scan: %w", detect.ErrNoBundle)
			}
			var args []string
			if hashSeed != 0 {
				args = append(args, "-hash-seed", strconv.FormatUint(hashSeed, 10))
			}
			if calibrate > 0 {
				args = append(args, "-calibrate", calibrate.String())
			}
			if beaconIntervals != 0 {
				args = append(args, "-beacon-intervals", strconv.Itoa(beaconIntervals))
			}
			var bar *progressBar
			if isTerminal(g.Stderr) {
				bar = &progressBar{w: g.Stderr, total: st.Size(), start: time.Now()}
			}
			var mu sync.Mutex
			var found []*wirev1.Finding
			sink := pipeline.SinkFunc(func(_ context.Context, fs []*wirev1.Finding) error {
				mu.Lock()
				defer mu.Unlock()
				for _, f := range fs {
					f.Seq = uint64(len(found) + 1)
					found = append(found, f)
				}
				return nil
			})
			cfg := detect.Config{
				Plugin: inst.Plugin, Bundles: bundles, ORTLib: inst.ORTLib, PluginArgs: args,
				StageBundles: true, Pcaps: []string{pcap}, Logger: log,
				Aggregate: detect.AggregatorConfig{Window: window, MinPackets: minPackets, MinSeverity: minSev,
					PersistWindows: persistWindows, PacketTime: true},
			}
			// Offline: wait for the plugin rather than drop packets.
			cfg.Host.FullWait = 10 * time.Minute
			cfg.Host.DownWait = time.Minute
			// The default ring (4 MiB, resident in both processes) absorbs
			// bursts of live traffic; a file waits for the plugin instead,
			// so a few of the plugin's largest batches are enough.
			cfg.Host.RingSlots = scanRingSlots
			if bar != nil {
				cfg.Progress = bar.update
			}
			pl, err := detect.New(cfg)
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			start := time.Now()
			err = pl.Run(cmd.Context(), sink)
			if bar != nil {
				bar.done()
			}
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			ps := pl.Stats()
			secs := time.Since(start).Seconds()
			rep := ScanReport{Summary: ScanSummary{
				Packets: ps.Capture.Packets, Seconds: secs, Findings: len(found), Decoded: ps.Capture.Decoded,
				Anomalies: ps.Anomalies, EventsLost: ps.Host.Lost(), PluginRestarts: ps.Host.Restarts,
			}, Findings: []FindingJSON{}}
			if secs > 0 {
				rep.Summary.PacketsPerSec = float64(ps.Capture.Packets) / secs
			}
			for _, f := range found {
				rep.Findings = append(rep.Findings, NewFindingJSON(f))
			}
			if asJSON {
				return writeJSON(g.Stdout, rep)
			}
			printScan(g.Stdout, pcap, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pcap, "pcap", "", "capture file to scan (pcap or pcapng)")
	f.StringVar(&bundlePath, "bundle", "", "model bundle to use instead of the installed one of its feature set")
	f.BoolVar(&asJSON, "json", false, "print one JSON document")
	f.StringVar(&plugin, "plugin", "", "detector plugin binary (default: found next to vigil-agent)")
	f.DurationVar(&window, "window", 30*time.Second, "aggregation window per source (packet time)")
	f.Uint64Var(&minPackets, "min-packets", 0, "anomalous packets a source needs for a finding below high severity, unless a content hint leads it (default 3)")
	f.StringVar(&minSeverity, "min-severity", "", "lowest severity reported: low, medium, high or critical (default medium)")
	f.IntVar(&persistWindows, "persist-windows", 0, fmt.Sprintf("windows in a row of anomalies (each with --min-packets) after which a source is reported even below --min-severity, as medium; -1: off (default %d)", detect.DefaultPersistWindows))
	f.IntVar(&beaconIntervals, "beacon-intervals", 0, fmt.Sprintf("regular intervals between a host's connections to one address and port before the beacon rule reports them (%d to %d; 0: the plugin's default, 20; -1: off)", config.MinBeaconIntervals, config.MaxBeaconIntervals))
	f.DurationVar(&calibrate, "calibrate", 0, "per-sensor calibration: observe this much of the capture (packet time) before flagging")
	f.Uint64Var(&hashSeed, "hash-seed", 0, "feature-table hash seed (default: a fixed seed, so repeated scans of a file are byte-identical)")
	f.StringSliceVar(&modelDirs, "model-dir", nil, "directories with model bundles (after the one next to the binary)")
	f.StringSliceVar(&pluginDirs, "plugin-dir", nil, "directories with detector plugins (after the binary's own)")
	extendScanDir(cmd, g) // --dir (fileactivity), cmd_scan_dir.go
	return cmd
}

func printScan(w io.Writer, pcap string, rep ScanReport) {
	s := rep.Summary
	fmt.Fprintf(w, "%s: %d packets in %.2f s (%.0f packets/s), %d anomalous, %d findings",
		pcap, s.Packets, s.Seconds, s.PacketsPerSec, s.Anomalies, s.Findings)
	if s.EventsLost > 0 || s.PluginRestarts > 0 {
		fmt.Fprintf(w, " (plugin restarts %d, packets not scored %d)", s.PluginRestarts, s.EventsLost)
	}
	fmt.Fprintln(w)
	if len(rep.Findings) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tSOURCE\tFIRST SEEN\tSPAN\tCOUNT\tSCORE/THR\tMODEL\tSUMMARY")
	for _, f := range rep.Findings {
		src := safeText(f.Context.SrcIP)
		if src == "" {
			src = "-"
		}
		ratio := 0.0
		if f.Threshold > 0 {
			ratio = f.Score / f.Threshold
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.1fx\t%s@%d\t%s\n", f.Severity, src, f.FirstSeen.Format("2006-01-02 15:04:05"),
			f.LastSeen.Sub(f.FirstSeen).Round(time.Millisecond), f.Count, ratio, safeText(f.Model.Name), f.Model.Version, safeText(f.Summary))
	}
	_ = tw.Flush()
}

// safeText makes text that others control printable on the operator's terminal (termsafe.Text).
func safeText(s string) string { return termsafe.Text(s) }

// unsafeRune reports whether safeText escapes r.
func unsafeRune(r rune) bool { return termsafe.Unsafe(r) }

// progressBar draws a one-line progress bar on a terminal.
type progressBar struct {
	w     io.Writer
	total int64
	start time.Time
	drawn bool
}

func (b *progressBar) update(st capture.Stats) {
	frac := 0.0
	if b.total > 0 {
		// Captured bytes leave out the file's record headers (16 bytes each).
		frac = min(float64(int64(st.Bytes)+16*int64(st.Packets))/float64(b.total), 1)
	}
	const width = 30
	n := int(frac * width)
	rate := float64(st.Packets) / max(time.Since(b.start).Seconds(), 1e-9)
	fmt.Fprintf(b.w, "\r[%s%s] %3.0f%% %d packets %.0f/s ", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, st.Packets, rate)
	b.drawn = true
}

func (b *progressBar) done() {
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
	}
}
