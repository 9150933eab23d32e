// Command vigil-lab runs the lab network of test/lab: several hosts in
// network namespaces with real servers and clients, captured to a pcap, with
// labelled attacks on demand. Needs root.
//
//	vigil-lab --duration 10m --out lab.pcap [--attacks nmap,hping3,hydra,beacon,dnstunnel,revshell,icmpexfil,arpspoof,telnetd,hexc2] [--truth lab.json]
//	vigil-lab --cleanup     remove namespaces left by a lab that died
//
// A lab removes its namespaces when it ends, and a reaper process it starts
// (the same binary, in its own session) removes them if the lab is killed
// (SIGKILL, the OOM killer). --cleanup is for what is left when both died,
// or by labs before the reaper.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/test/lab"
)

func main() {
	var cfg lab.Config
	var attacks string
	var cleanup, force, verbose bool
	flag.DurationVar(&cfg.Duration, "duration", time.Minute, "traffic time")
	flag.StringVar(&cfg.Out, "out", "lab.pcap", "pcap file to write")
	flag.StringVar(&cfg.Truth, "truth", "", "truth file (JSON; default: the pcap's name with .json)")
	flag.StringVar(&attacks, "attacks", "", "comma-separated attacks: "+strings.Join(lab.AttackNames, ","))
	flag.IntVar(&cfg.Clients, "clients", 4, "benign client hosts")
	flag.DurationVar(&cfg.BeaconEvery, "beacon-every", 2*time.Second, "beacon period")
	flag.IntVar(&cfg.Snaplen, "snaplen", 0, "bytes kept of each frame (0: whole frames; the original length is recorded)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "seed of the clients' choices and timing")
	flag.BoolVar(&cleanup, "cleanup", false, "remove stale vigil-lab-* namespaces (of lab processes that are gone) and exit")
	flag.BoolVar(&force, "force", false, "with --cleanup: remove all vigil-lab-* namespaces, also those of running labs")
	flag.BoolVar(&verbose, "v", false, "debug logging")
	flag.Parse()
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cleanup {
		removed, err := lab.Cleanup(ctx, force)
		for _, n := range removed {
			fmt.Println("removed", n)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "vigil-lab: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if cfg.Truth == "" {
		cfg.Truth = strings.TrimSuffix(cfg.Out, filepath.Ext(cfg.Out)) + ".json"
	}
	if attacks != "" {
		cfg.Attacks = strings.Split(attacks, ",")
	}
	t, err := lab.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vigil-lab: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %v packets, %d hosts; truth in %s\n", cfg.Out, t.Extra["packets"], len(t.Hosts), cfg.Truth)
	for _, a := range t.Attacks {
		if a.Skipped != "" {
			fmt.Printf("  %-10s skipped: %s\n", a.Name, a.Skipped)
		} else {
			fmt.Printf("  %-10s %s -> %s, %s to %s\n", a.Name, a.Attacker, a.Victim, a.Start.Format(time.RFC3339Nano), a.End.Format(time.RFC3339Nano))
		}
	}
}
