package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/trust"
)

func init() { Register(60, newModelCmd) }

func newModelCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Model signing keys, bundles and the server's registry"}
	cmd.AddCommand(modelKeygen(app), modelSign(app), modelVerify(app), modelInspect(app), modelPublish(app), modelRollback(app),
		modelTrain(app), modelEval(app))
	return cmd
}

func modelKeygen(app *App) *cobra.Command {
	var out, alg string
	c := &cobra.Command{
		Use:   "keygen --out PREFIX [--alg ecdsa-p256|ed25519]",
		Short: "Make a release signing key: PREFIX.key (encrypted, 0600; passphrase from VIGIL_KEY_PASSPHRASE or a prompt) and PREFIX.pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out PREFIX is required")
			}
			pass, err := sign.Passphrase(true)
			if err != nil {
				return err
			}
			priv, pub, id, err := sign.GenerateKey(alg, pass)
			if err != nil {
				return err
			}
			if err := sign.WriteKeyPair(out, priv, pub); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "%s.key (encrypted) and %s.pub written\nkey id: %s\n", out, out, id)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "file name prefix")
	c.Flags().StringVar(&alg, "alg", sign.AlgECDSAP256, "key algorithm: ecdsa-p256 or ed25519")
	return c
}

func modelSign(app *App) *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   "sign --key KEY BUNDLE",
		Short: "Add this key's DSSE signature to the bundle (several keys may sign one bundle)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return errors.New("--key is required")
			}
			pass, err := sign.Passphrase(false)
			if err != nil {
				return err
			}
			s, err := sign.LoadSigner(key, pass)
			if err != nil {
				return err
			}
			if err := sign.SignBundle(args[0], s); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "signed %s with key %s\n", args[0], s.KeyID())
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "encrypted private key (PREFIX.key)")
	return c
}

func readPolicy(pubs []string, threshold int, policy string) (trust.Policy, error) {
	if policy != "" {
		return trust.Load(policy)
	}
	if len(pubs) == 0 {
		return trust.Policy{}, errors.New("give --pub KEY.pub (repeatable) or --policy trust.json")
	}
	var pems [][]byte
	for _, f := range pubs {
		b, _, err := sign.ReadPublicKeyFile(f)
		if err != nil {
			return trust.Policy{}, err
		}
		pems = append(pems, b)
	}
	return trust.NewPolicy(threshold, pems...)
}

func modelVerify(app *App) *cobra.Command {
	var (
		pubs      []string
		threshold int
		policy    string
		asJSON    bool
	)
	c := &cobra.Command{
		Use:   "verify (--pub PUB... [--threshold K] | --policy trust.json) BUNDLE",
		Short: "Verify a bundle as an agent would (signature threshold, digests, expiry)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := readPolicy(pubs, threshold, policy)
			if err != nil {
				return err
			}
			b, keys, err := trust.VerifyBundle(args[0], pol, time.Now())
			if err != nil {
				return err
			}
			if asJSON {
				return app.PrintJSON(map[string]any{"ok": true, "manifest": b.Manifest, "verified_by": keys})
			}
			fmt.Fprintf(app.Stdout, "OK: %s version %d (%s, %s), signed by %d of %d required keys: %s\n", b.Manifest.Name, b.Manifest.Version,
				b.Manifest.Detector, b.Manifest.FeatureSet, len(keys), pol.Threshold, strings.Join(keys, ", "))
			return nil
		},
	}
	c.Flags().StringArrayVar(&pubs, "pub", nil, "trusted public key (repeatable)")
	c.Flags().IntVar(&threshold, "threshold", 1, "signatures required")
	c.Flags().StringVar(&policy, "policy", "", "trust policy file instead of --pub")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// inspectView is what `model inspect --json` prints.
type inspectView struct {
	File       string             `json:"file"`
	Digest     string             `json:"digest"`
	Manifest   bundle.Manifest    `json:"manifest"`
	Signatures []bundle.Signature `json:"signatures"`
	Subject    []bundle.Subject   `json:"subject"`
}

func modelInspect(app *App) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "inspect BUNDLE [--json]",
		Short: "Show a bundle's manifest and signatures (nothing is verified)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := bundle.Read(args[0], bundle.DefaultLimits())
			if err != nil {
				return err
			}
			d, err := bundle.Digest(args[0])
			if err != nil {
				return err
			}
			v := inspectView{File: args[0], Digest: d, Manifest: b.Manifest, Signatures: b.Envelope.Signatures, Subject: b.Statement.Subject}
			if v.Signatures == nil {
				v.Signatures = []bundle.Signature{}
			}
			if asJSON {
				return app.PrintJSON(v)
			}
			m := b.Manifest
			fmt.Fprintf(app.Stdout, "bundle:       %s (%s)\nname:         %s\nversion:      %d\ndetector:     %s\nfeature set:  %s (dim %d)\n",
				args[0], d, m.Name, m.Version, m.Detector, m.FeatureSet, m.Dim)
			fmt.Fprintf(app.Stdout, "threshold:    %g\nquantization: %s\ncreated:      %s\nexpires:      %s\nmodel sha256: %s\n",
				m.Threshold, m.Quantization, m.Created.Format(time.RFC3339), m.Expires.Format(time.RFC3339), m.ModelSHA256)
			if m.MinAgentVersion != "" {
				fmt.Fprintf(app.Stdout, "min agent:    %s\n", m.MinAgentVersion)
			}
			fmt.Fprintf(app.Stdout, "signatures:   %d\n", len(v.Signatures))
			// The bundle is not verified: a keyid is any string the file holds.
			for _, s := range v.Signatures {
				fmt.Fprintf(app.Stdout, "  keyid %s\n", safeText(s.KeyID))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// upload POSTs raw bytes (the API client sends JSON only).
func (c *Client) upload(ctx context.Context, path string, q url.Values, body []byte, out any) error {
	u := c.base.JoinPath("/api/v1/" + path)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	hc := *c.http
	hc.Timeout = 5 * time.Minute // the smoke test starts a plugin
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("POST %s: decode answer: %w", path, err)
	}
	return nil
}

func modelPublish(app *App) *cobra.Command {
	var (
		noSmoke bool
		asJSON  bool
	)
	c := &cobra.Command{
		Use:   "publish BUNDLE [--no-smoke] [--json]",
		Short: "Upload a signed bundle to the server's registry (verified against the server's trust policy and smoke-loaded by the detector plugin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := bundle.Read(args[0], bundle.DefaultLimits()); err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			cl, err := app.Client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if noSmoke {
				q.Set("no_smoke", "1")
			}
			var res struct {
				Model struct {
					Name    string `json:"name"`
					Version uint64 `json:"version"`
					Digest  string `json:"digest"`
				} `json:"model"`
				Signers []string `json:"signers"`
				Smoke   string   `json:"smoke"`
			}
			if err := cl.upload(cmd.Context(), "models", q, data, &res); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			if asJSON {
				return app.PrintJSON(res)
			}
			fmt.Fprintf(app.Stdout, "published %s@%d (%s), signed by %d key(s)\nsmoke test: %s\n", res.Model.Name, res.Model.Version,
				res.Model.Digest, len(res.Signers), res.Smoke)
			return nil
		},
	}
	c.Flags().BoolVar(&noSmoke, "no-smoke", false, "skip the plugin smoke test (no detector plugin on the server)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func modelRollback(app *App) *cobra.Command {
	var (
		key, out, reason string
		ttl              time.Duration
	)
	c := &cobra.Command{
		Use:   "rollback --key KEY --out FILE [--ttl 24h] [--reason TEXT] BUNDLE",
		Short: "Sign a rollback instruction allowing agents to go back to BUNDLE (for `vigil-agent update --rollback`)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" || out == "" {
				return errors.New("--key and --out are required")
			}
			b, err := bundle.Read(args[0], bundle.DefaultLimits())
			if err != nil {
				return err
			}
			pass, err := sign.Passphrase(false)
			if err != nil {
				return err
			}
			s, err := sign.LoadSigner(key, pass)
			if err != nil {
				return err
			}
			data, err := rollback.Sign(rollback.For(&b.Manifest, time.Now(), ttl, reason), s)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, data, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "rollback instruction for %s@%d written to %s (valid %s)\n", b.Manifest.Name, b.Manifest.Version, out, ttl)
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "encrypted private key")
	c.Flags().StringVar(&out, "out", "", "output file")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the instruction)")
	c.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "validity (at most 30 days)")
	return c
}
