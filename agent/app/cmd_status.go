package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/metrics"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/pki"
)

func init() { Register(newStatusCommand) }

// StatusReport is what `status --json` prints (one JSON document).
type StatusReport struct {
	StateDir     string              `json:"state_dir"`
	Enrolled     bool                `json:"enrolled"`
	AgentID      string              `json:"agent_id,omitempty"`
	Entity       string              `json:"entity,omitempty"`
	Server       string              `json:"server,omitempty"`
	TrustDomain  string              `json:"trust_domain,omitempty"`
	CertNotAfter time.Time           `json:"cert_not_after,omitzero"`
	CertExpired  bool                `json:"cert_expired"`
	Running      bool                `json:"running"` // a running agent answered on the metrics listener
	Connected    bool                `json:"connected"`
	Spool        *metrics.SpoolStats `json:"spool,omitempty"`
	Live         *metrics.Status     `json:"live,omitempty"`
	Problems     []string            `json:"problems,omitempty"`
}

func newStatusCommand(g *Globals) *cobra.Command {
	var (
		asJSON     bool
		configFile string
		dir        string
		listen     string
	)
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the agent's identity, certificate and spool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Default()
			if configFile != "" {
				c, err := config.Load(configFile)
				if err != nil {
					return err
				}
				cfg = c
			}
			if dir != "" {
				cfg.StateDir = dir
			}
			if listen != "" {
				cfg.Metrics.Listen = listen
			}
			rep := collectStatus(cmd.Context(), cfg)
			if asJSON {
				enc := json.NewEncoder(g.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return fmt.Errorf("status: %w", err)
				}
			} else {
				printStatus(g, rep)
			}
			if !rep.Enrolled {
				return &exitError{code: 3}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print one JSON document")
	f.StringVar(&configFile, "config", "", "configuration file of the agent")
	f.StringVar(&dir, "state", "", "state directory (default "+config.DefaultStateDir+")")
	f.StringVar(&listen, "metrics", "", "metrics listener of a running agent (default "+config.DefaultMetricsListen+")")
	return cmd
}

func collectStatus(ctx context.Context, cfg *config.Config) *StatusReport {
	d := state.Dir(cfg.StateDir)
	rep := &StatusReport{StateDir: cfg.StateDir}
	if id, err := d.ReadIdentity(); err != nil {
		if !errors.Is(err, state.ErrNotEnrolled) {
			rep.Problems = append(rep.Problems, err.Error())
		}
	} else {
		rep.Enrolled = true
		rep.AgentID, rep.Entity, rep.Server, rep.TrustDomain = id.AgentID, id.Entity, id.Server, id.TrustDomain
	}
	if certs, err := pki.ReadCerts(d.Path(state.CertFile)); err == nil && len(certs) > 0 {
		rep.CertNotAfter = certs[0].NotAfter
		rep.CertExpired = time.Now().After(certs[0].NotAfter)
	} else if rep.Enrolled {
		rep.Problems = append(rep.Problems, fmt.Sprintf("certificate: %v", err))
	}
	// A running agent holds the spool's lock: ask it first.
	if cfg.Metrics.Listen != "off" {
		if live, err := fetchLive(ctx, cfg.Metrics.Listen); err == nil {
			rep.Running, rep.Live = true, live
			rep.Connected = live.Connected
			rep.Spool = live.Spool
			return rep
		}
	}
	if _, err := os.Stat(d.Path(state.SpoolFile)); errors.Is(err, os.ErrNotExist) {
		return rep // never ran: no spool yet
	}
	st, err := spool.ReadStats(d.Path(state.SpoolFile), 500*time.Millisecond)
	switch {
	case err == nil:
		rep.Spool = metrics.SpoolJSON(st)
	case rep.Enrolled:
		rep.Problems = append(rep.Problems, fmt.Sprintf("spool: %v", err))
	}
	return rep
}

func fetchLive(ctx context.Context, listen string) (*metrics.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+metrics.StatusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var st metrics.Status
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

func printStatus(g *Globals, r *StatusReport) {
	w := g.Stdout
	fmt.Fprintf(w, "state dir:    %s\n", r.StateDir)
	if !r.Enrolled {
		fmt.Fprintln(w, "enrolled:     no (run `vigil-agent enroll`)")
	} else {
		fmt.Fprintf(w, "agent:        %s (entity %s, trust domain %s)\n", r.AgentID, r.Entity, r.TrustDomain)
		fmt.Fprintf(w, "server:       %s\n", r.Server)
	}
	if !r.CertNotAfter.IsZero() {
		left := time.Until(r.CertNotAfter).Round(time.Minute)
		note := fmt.Sprintf("in %s", left)
		if r.CertExpired {
			note = "EXPIRED: re-enroll with --force"
		}
		fmt.Fprintf(w, "certificate:  expires %s (%s)\n", r.CertNotAfter.Format(time.RFC3339), note)
	}
	switch {
	case r.Running:
		fmt.Fprintf(w, "process:      running, connected=%v\n", r.Connected)
	default:
		fmt.Fprintln(w, "process:      not running (no answer on the metrics listener)")
	}
	if s := r.Spool; s != nil {
		fmt.Fprintf(w, "spool:        %d findings waiting (%d bytes), %d dropped, next seq %d, acked through %d\n",
			s.Depth, s.Bytes, s.Dropped, s.NextSeq, s.AckedSeq)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem:      %s\n", p)
	}
}
