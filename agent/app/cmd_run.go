package app

import (
	"fmt"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/config"
)

func init() { Register(newRunCommand) }

// runFlags are run's command-line overrides of the config file.
type runFlags struct {
	configFile string
	stateDir   string
	ifaces     []string
	pcaps      []string
	watch      []string
	metrics    string
	demo       string
	calibrate  time.Duration
}

func newRunCommand(g *Globals) *cobra.Command {
	var rf runFlags
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [--state DIR] [--iface NAME]... [--pcap FILE]... [--watch DIR]...",
		Short: "Run the agent: capture, detect, spool and ship findings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadRunConfig(cmd, &rf, g)
			if err != nil {
				return err
			}
			log := g.Logger()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return Run(ctx, cfg, Options{}, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&rf.configFile, "config", "", "configuration file (YAML, or JSON if it ends in .json)")
	f.StringVar(&rf.stateDir, "state", "", "state directory (default "+config.DefaultStateDir+")")
	f.StringArrayVar(&rf.ifaces, "iface", nil, "capture on this interface (repeatable; adds to the config)")
	f.StringArrayVar(&rf.pcaps, "pcap", nil, "replay this pcap file (repeatable; adds to the config)")
	f.StringArrayVar(&rf.watch, "watch", nil, "watch this directory for file activity (repeatable; adds to the config)")
	f.StringVar(&rf.metrics, "metrics", "", "metrics listener on localhost, or off (default "+config.DefaultMetricsListen+")")
	f.DurationVar(&rf.calibrate, "calibrate", 0, "per-sensor calibration: observe this much local activity (event time) without findings, then raise the thresholds to the local quantile (calibration.grace)")
	f.StringVar(&rf.demo, "demo-findings", "", "TEST/DEMO ONLY: generate N synthetic findings per second (\"N/s\")")
	_ = f.MarkHidden("demo-findings")
	return cmd
}

// loadRunConfig loads the file, applies the flags, then validates.
func loadRunConfig(cmd *cobra.Command, rf *runFlags, g *Globals) (*config.Config, error) {
	cfg := config.Default()
	if rf.configFile != "" {
		c, err := config.Load(rf.configFile)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	if rf.stateDir != "" {
		cfg.StateDir = rf.stateDir
	}
	cfg.Capture.Interfaces = append(cfg.Capture.Interfaces, rf.ifaces...)
	cfg.Capture.Pcaps = append(cfg.Capture.Pcaps, rf.pcaps...)
	cfg.Watch = append(cfg.Watch, rf.watch...)
	if rf.metrics != "" {
		cfg.Metrics.Listen = rf.metrics
	}
	if cmd.Flags().Changed("calibrate") {
		cfg.Calibration.Grace = config.Duration(rf.calibrate)
	}
	if rf.demo != "" {
		rate, err := parseRate(rf.demo)
		if err != nil {
			return nil, err
		}
		cfg.Demo.Rate = rate
	}
	if cmd.Flags().Changed("log-level") || g.LogLevel != "" {
		cfg.Log.Level = g.LogLevel
	}
	if g.LogFormat != "" {
		cfg.Log.Format = g.LogFormat
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	g.LogLevel, g.LogFormat = cfg.Log.Level, cfg.Log.Format
	return cfg, nil
}

// parseRate parses "N/s" or "N".
func parseRate(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || v < 0 || v > 1e6 {
		return 0, fmt.Errorf("--demo-findings %q: want N/s with 0 <= N <= 1e6", s)
	}
	return v, nil
}
