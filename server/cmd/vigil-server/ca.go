package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/internal/termsafe"
	"github.com/vigil-edge/vigil/pki"
)

// newCACmd: the deployment's certificate authority. The issuing CA, which
// signs agent and server certificates, lasts five years; rotate-issuing
// replaces it under the same root, so that agents keep working.
func newCACmd(_ *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The deployment's certificate authority"}
	var dir, rootKey string
	rotate := &cobra.Command{
		Use:   "rotate-issuing --data DIR [--root-key FILE]",
		Short: "Replace the issuing CA (signed by the root key) and re-issue the server certificate; then restart the server",
		Long: `Replace the deployment's issuing CA with a new one signed by the root key, and re-issue the
server certificate from it (same names and key). Agents need nothing: they trust the root, their
certificates from the old issuing CA stay valid until they end, and their next renewal comes from
the new one. The old issuing key is deleted.

Run it as the owner of the data directory (sudo -u vigil-server ...), then restart vigil-server,
which keeps the CA it loaded until then. A rotation cut short (a crash, a full disk) is finished by
running the command again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--data is required")
			}
			if err := sameOwner(dir); err != nil {
				return err
			}
			r, err := pki.RotateIssuing(dir, rootKey, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if r.Resumed {
				fmt.Fprintln(out, "finished an interrupted rotation")
			} else if r.Old != nil {
				fmt.Fprintf(out, "retired issuing CA: serial %x, valid until %s (its key is deleted)\n", r.Old.SerialNumber, r.Old.NotAfter.UTC().Format(time.RFC3339))
			}
			fmt.Fprintf(out, "new issuing CA:     serial %x, valid until %s\n", r.Issuing.SerialNumber, r.Issuing.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintf(out, "server certificate: valid until %s\n", r.Server.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintln(out, "restart vigil-server to use them (systemctl restart vigil-server)")
			return nil
		},
	}
	rotate.Flags().StringVar(&dir, "data", "", "data directory of the deployment")
	rotate.Flags().StringVar(&rootKey, "root-key", "", "root CA key, if kept outside the data directory (default DIR/root.key)")
	cmd.AddCommand(rotate, newCAStatusCmd())
	return cmd
}

// caCert is one certificate of `ca status`.
type caCert struct {
	Role     string    `json:"role"`
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
	Note     string    `json:"note,omitempty"`
}

// caWarnBefore is how long before its end `ca status` says to act on a CA
// (the server warns in healthz only a week before its certificate ends).
const caWarnBefore = 90 * 24 * time.Hour

func newCAStatusCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "status --data DIR [--json]",
		Short: "When the root, the issuing CA and the server certificate end, and what to do before",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--data is required")
			}
			certs, err := caStatus(dir, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(certs)
			}
			for _, c := range certs {
				fmt.Fprintf(out, "%-8s %s (serial %s): ends %s, %d days left", c.Role, termsafe.Text(c.Subject), c.Serial, c.NotAfter.UTC().Format(time.RFC3339), c.DaysLeft)
				if c.Note != "" {
					fmt.Fprintf(out, ": %s", c.Note)
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "data directory of the deployment")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// caStatus reads the deployment's three certificates (the CA keys are not
// needed) and says, for each that ends within caWarnBefore, what to do.
func caStatus(dir string, now time.Time) ([]caCert, error) {
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return nil, err
	}
	srv, err := ca.ServerCertificate()
	if err != nil {
		return nil, err
	}
	notes := map[string]string{
		"root":    "a new deployment is needed before then (agents enrolled again)",
		"issuing": "rotate it: vigil-server ca rotate-issuing",
		"server":  "the running server renews it 30 days before its end; if it does not, see its log",
	}
	var out []caCert
	for _, c := range []struct {
		role string
		cert *x509.Certificate
	}{{"root", ca.Root}, {"issuing", ca.Issuing}, {"server", srv.Leaf}} {
		left := c.cert.NotAfter.Sub(now)
		cc := caCert{Role: c.role, Subject: c.cert.Subject.String(), Serial: fmt.Sprintf("%x", c.cert.SerialNumber),
			NotAfter: c.cert.NotAfter, DaysLeft: int(left.Hours() / 24)}
		switch {
		case left <= 0:
			cc.Note = "ENDED: " + notes[c.role]
		case left < caWarnBefore:
			cc.Note = notes[c.role]
		}
		out = append(out, cc)
	}
	return out, nil
}

// sameOwner refuses to write a deployment's keys as another user than the
// directory's owner: files made by root in the server's directory would be
// unreadable by the server (0600), which would then not start.
func sameOwner(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); uint32(uid) != st.Uid {
		return fmt.Errorf("data directory %s belongs to uid %d, this process runs as uid %d: run it as the directory's owner (sudo -u vigil-server ...)", dir, st.Uid, uid)
	}
	return nil
}
