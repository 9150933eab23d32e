package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelpFlagNames: pflag takes the first `quoted` word of a flag's usage
// as the name of its value in the help ("--data vigil-server init" instead
// of "--data string"), so usages quote nothing.
func TestHelpFlagNames(t *testing.T) {
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " `") {
				t.Errorf("%s --%s: the help shows its value as %q", c.CommandPath(), f.Name, name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
}

// TestEnrollCommandPort: a server run with `--quic :PORT` (all addresses, a
// port other than 4433) prints enroll commands naming PORT, not 4433.
func TestEnrollCommandPort(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := execute(context.Background(), "init", "--data", dir, "--log-format", "text"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	freePort := func(network string) string {
		t.Helper()
		var addr net.Addr
		if network == "udp" {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr = c.LocalAddr()
			c.Close()
		} else {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr = l.Addr()
			l.Close()
		}
		_, p, _ := net.SplitHostPort(addr.String())
		return p
	}
	quicPort, apiPort := freePort("udp"), freePort("tcp")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := execute(ctx, "run", "--data", dir, "--quic", ":"+quicPort, "--api", "127.0.0.1:"+apiPort, "--log-format", "json", "--log-level", "warn")
		done <- err
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
	}()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 5 * time.Second}
	var resp *http.Response
	for i := 0; ; i++ {
		req, _ := http.NewRequest("POST", "https://127.0.0.1:"+apiPort+"/api/v1/tokens", strings.NewReader(`{"entity":"acme","ttl":"1h"}`))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		req.Header.Set("Content-Type", "application/json")
		if resp, err = client.Do(req); err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("API did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer resp.Body.Close()
	var body struct{ Command string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create token: %d %v", resp.StatusCode, err)
	}
	if want := "--server 127.0.0.1:" + quicPort + " "; !strings.Contains(body.Command, want) {
		t.Errorf("enroll command %q lacks %q", body.Command, want)
	}
}
