// Command vigil-coverage measures how much of each labelled attack the
// agent's findings cover (package test/coverage): it scans the labelled
// attack captures of the shared data (MANIFEST.csv), a trafficgen SYN scan,
// and the held-out benign captures (every fifth file, as the trainers hold
// them out) with `vigil-agent scan --json`, and writes a Markdown and a JSON
// report. `make coverage` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/test/coverage"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	agent := flag.String("agent", "bin/vigil-agent", "the vigil-agent binary (it finds its plugins and bundles next to itself)")
	data := flag.String("data", "../shared/data", "the shared data folder (attacks/, benign/, MANIFEST.csv)")
	outMD := flag.String("out", "models/baseline/COVERAGE.md", "Markdown report")
	outJSON := flag.String("json", "models/baseline/coverage.json", "JSON report")
	var extraBenign files
	flag.Var(&extraBenign, "benign", "another benign capture, scanned with the held-out ones (repeatable)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *agent, *data, *outMD, *outJSON, extraBenign); err != nil {
		fmt.Fprintln(os.Stderr, "vigil-coverage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, agent, data, outMD, outJSON string, extraBenign []string) error {
	ver, err := exec.CommandContext(ctx, agent, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", agent, err)
	}
	mf, err := os.Open(filepath.Join(data, "MANIFEST.csv"))
	if err != nil {
		return fmt.Errorf("shared data: %w", err)
	}
	labels, err := dataset.ParseManifest(mf)
	mf.Close()
	if err != nil {
		return err
	}
	scan := coverage.AgentScanner(agent)
	r := &coverage.Report{Command: strings.TrimSpace("vigil-coverage " + strings.Join(os.Args[1:], " ")), Agent: strings.TrimSpace(string(ver))}

	// Labelled attack captures, in path order.
	var keys []string
	for k, ls := range labels {
		if strings.HasPrefix(k, "attacks/") && slices.ContainsFunc(ls, func(l dataset.Label) bool { return l.Attacker.IsValid() }) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		a, err := coverage.EvalAttack(ctx, scan, filepath.Join(data, k), labels[k])
		if err != nil {
			return err
		}
		r.Attacks = append(r.Attacks, a)
	}
	// The trainer's synthetic scan (trafficgen seed 7, scanner 10.99.66.6).
	dir, err := os.MkdirTemp("", "vigil-coverage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	synth := filepath.Join(dir, "synthetic-synscan.pcap")
	f, err := os.Create(synth)
	if err != nil {
		return err
	}
	info, err := trafficgen.Write(f, trafficgen.Config{Seed: 7, Scan: true})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("generate %s: %w", synth, err)
	}
	scanner, _ := netip.AddrFromSlice(info.Scanner.To4())
	a, err := coverage.EvalAttack(ctx, scan, synth, []dataset.Label{{What: "trafficgen benign sessions + SYN scan", Attacker: scanner}})
	if err != nil {
		return err
	}
	r.Attacks = append(r.Attacks, a)

	// Held-out benign captures: every fifth file (index 2 mod 5, sorted),
	// as vigil-train-baseline holds them out, less those the agent's
	// decoder finds attacks in (the trainers leave them out too).
	all, err := dataset.List(filepath.Join(data, "benign"))
	if err != nil {
		return err
	}
	var benign []string
	excluded := 0
	for i, p := range all {
		if i%5 != 2 {
			continue
		}
		if c, err := dataset.Extract(ctx, p, nil, 0); err == nil && c.NotBenign() != "" {
			excluded++
			continue
		}
		benign = append(benign, p)
	}
	r.BenignWhat = fmt.Sprintf("the %d held-out shared benign captures (every fifth file, as the trainers hold them out; %d more left out "+
		"because the agent's decoder finds attacks in them)", len(benign), excluded)
	if len(extraBenign) > 0 {
		r.BenignWhat += " and " + strings.Join(extraBenign, ", ")
		benign = append(benign, extraBenign...)
	}
	if r.Benign, err = coverage.EvalBenign(ctx, scan, benign); err != nil {
		return err
	}
	for _, w := range []struct {
		path  string
		write func(*os.File) error
	}{{outMD, func(f *os.File) error { return r.WriteMarkdown(f) }}, {outJSON, func(f *os.File) error { return r.WriteJSON(f) }}} {
		if w.path == "" {
			continue
		}
		f, err := os.Create(w.path)
		if err != nil {
			return err
		}
		err = w.write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", w.path, err)
		}
	}
	t := r.Totals()
	fmt.Printf("%d of %d labelled captures with >= %.0f%% of attacker packets in a finding's span, %d with the lead-in; benign covered %.3f%% / %.3f%%\n",
		t.SpanGoal, t.Captures, 100*coverage.Goal, t.LeadGoal, 100*frac(r.Benign.Packets.Span, r.Benign.Packets.Packets),
		100*frac(r.Benign.Packets.WithLead, r.Benign.Packets.Packets))
	return nil
}

func frac(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
