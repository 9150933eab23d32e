// Command vigil-server is the Vigil server: `init` creates a deployment (PKI,
// database, first admin API token), `run` serves agents over QUIC and
// people over the HTTPS API, and `backup` copies the database while it
// runs. The work is done by server/app.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/internal/termsafe"
	"github.com/vigil-edge/vigil/server/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		// One line, escaped: errors carry names and text from outside
		// (paths, certificate fields, configuration values).
		fmt.Fprintln(os.Stderr, "vigil-server:", termsafe.Text(err.Error()))
		os.Exit(1)
	}
}

type globalFlags struct {
	logFormat string
	logLevel  string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "vigil-server",
		Short:         "Vigil server: QUIC endpoint for agents, findings store, HTTPS API",
		Version:       buildinfo.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "auto", "log format: auto (text on a terminal, JSON otherwise), text, json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(newInitCmd(g), newRunCmd(g), newTrustCmd(g), newCACmd(g), newBackupCmd(g))
	return root
}

func newLogger(g *globalFlags, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	format := g.logFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want auto, text or json", g.logFormat)
	}
}

func newInitCmd(g *globalFlags) *cobra.Command {
	var (
		dir, td  string
		dns, ips []string
	)
	c := &cobra.Command{
		Use:   "init --data DIR [--trust-domain NAME] [--dns NAME,...] [--ip ADDR,...]",
		Short: "Create a deployment: PKI, database and the first admin API token (DIR/admin.token)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g, os.Stderr)
			if err != nil {
				return err
			}
			opts := app.InitOptions{DataDir: dir, TrustDomain: td, DNSNames: dns}
			for _, s := range ips {
				ip := net.ParseIP(strings.TrimSpace(s))
				if ip == nil {
					return fmt.Errorf("--ip %q: not an IP address", s)
				}
				opts.IPs = append(opts.IPs, ip)
			}
			res, err := app.Init(cmd.Context(), opts, log)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "deployment created in %s\n", dir)
			fmt.Fprintf(out, "CA certificate: %s\n", res.CAFile)
			fmt.Fprintf(out, "CA pin:         %s\n", res.Pin)
			fmt.Fprintf(out, "admin token:    %s (mode 0600)\n", res.AdminTokenFile)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "data directory (created; must not hold a deployment)")
	c.Flags().StringVar(&td, "trust-domain", "vigil.local", "trust domain of the agent identities")
	c.Flags().StringSliceVar(&dns, "dns", nil, "DNS names of the server certificate (default: this host's name and localhost)")
	c.Flags().StringSliceVar(&ips, "ip", nil, "IP addresses of the server certificate (default: 127.0.0.1 and ::1)")
	_ = c.MarkFlagRequired("data")
	return c
}

func newRunCmd(g *globalFlags) *cobra.Command {
	var cfg app.Config
	c := &cobra.Command{
		Use:   "run --data DIR [--quic ADDR] [--api ADDR] [--retention DAYS]",
		Short: "Serve agents (QUIC) and the HTTPS API until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g, os.Stderr)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if cfg.PublicQUICAddr == "" {
				cfg.PublicQUICAddr = quicPortOnly(cfg.QUICAddr)
			}
			if err := app.Run(cmd.Context(), cfg); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&cfg.DataDir, "data", "", "data directory made by vigil-server init")
	c.Flags().StringVar(&cfg.QUICAddr, "quic", app.DefaultQUICAddr, "UDP address of the QUIC endpoint for agents")
	c.Flags().StringVar(&cfg.APIAddr, "api", app.DefaultAPIAddr, "TCP address of the HTTPS API")
	c.Flags().StringVar(&cfg.ConfigFile, "config", "", "server config file (YAML): SIEM forwarders (syslog, webhook)")
	c.Flags().StringVar(&cfg.PublicQUICAddr, "public-quic", "", "HOST:PORT agents use to reach the QUIC endpoint, for printed enroll commands (default: the --quic address when it names a host, else the API request's host name with the --quic port)")
	c.Flags().Var(retentionFlag{&cfg.Retention}, "retention", "delete findings received longer ago than this, hourly: 0 or off keeps them for ever; days such as 365d, or a duration such as 8760h; at least 1d")
	_ = c.MarkFlagRequired("data")
	return c
}

// quicPortOnly is the enroll address of a QUIC endpoint bound to all
// addresses (":5555", "0.0.0.0:5555", "[::]:5555"): ":PORT", which the API
// completes with the request's host name. "" (the API's default, the
// request's host name with port 4433) for an address naming a host, which
// the server prints as it is, or a port chosen by the system (":0").
func quicPortOnly(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" || port == "0" {
		return ""
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return ""
	}
	return ":" + port
}
