// Command vigil-package builds Vigil's release artifacts from the bin/
// directory of `make build`: vigil-agent and vigil-server as .deb and .rpm,
// the offline bundle vigil-agent-<version>-linux-amd64.tar.gz, SHA256SUMS,
// and SHA256SUMS.sig when --sign-key is given.
//
//	vigil-package --bin bin --out dist [--version V] [--trust trust.json] [--sign-key release.key]
//	vigil-package verify --pub release.pub DIR
//
// The version defaults to the git work tree's (see packaging.GitVersion).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/installer/packaging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vigil-package:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if len(args) > 0 && args[0] == "verify" {
		return verify(args[1:])
	}
	fs := flag.NewFlagSet("vigil-package", flag.ContinueOnError)
	var (
		o        packaging.Options
		formats  string
		signKey  string
		repo     string
		noTrust  bool
		mtimeStr string
	)
	fs.StringVar(&o.BinDir, "bin", "bin", "directory with the built binaries (make build)")
	fs.StringVar(&o.OutDir, "out", "dist", "output directory")
	fs.StringVar(&o.Version, "version", "", "package version (default: from git describe in --repo)")
	fs.StringVar(&repo, "repo", ".", "git work tree for the default version and file times")
	fs.StringVar(&o.TrustPolicy, "trust", "", "trust.json of the model-signing release keys (installed as /etc/vigil/trust.json)")
	fs.BoolVar(&noTrust, "no-trust-policy", false, "build without a trust policy (the agent then refuses every model update)")
	fs.StringVar(&signKey, "sign-key", "", "ECDSA release key (unencrypted PEM) to sign SHA256SUMS with")
	fs.StringVar(&formats, "formats", "deb,rpm,tar", "what to build: deb, rpm, tar (offline bundle)")
	fs.StringVar(&o.Arch, "arch", "amd64", "architecture (Debian name)")
	fs.StringVar(&mtimeStr, "mtime", "", "modification time of the packaged files, RFC 3339 (default: the HEAD commit's, else now)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.TrustPolicy == "" && !noTrust {
		return errors.New("no --trust policy: pass --trust FILE (the release keys' trust.json) or --no-trust-policy")
	}
	o.Formats = strings.Split(formats, ",")
	if o.Version == "" || mtimeStr == "" {
		v, t, err := packaging.GitVersion(ctx, repo)
		if err != nil && o.Version == "" {
			return err
		}
		if o.Version == "" {
			o.Version = v
		}
		o.MTime = t
	}
	if mtimeStr != "" {
		t, err := time.Parse(time.RFC3339, mtimeStr)
		if err != nil {
			return fmt.Errorf("--mtime: %w", err)
		}
		o.MTime = t
	}
	if signKey != "" {
		b, err := os.ReadFile(signKey)
		if err != nil {
			return fmt.Errorf("--sign-key: %w", err)
		}
		k, err := packaging.ParseSigningKey(b)
		if err != nil {
			return fmt.Errorf("--sign-key %s: %w", signKey, err)
		}
		o.SigningKey = k
	}
	o.Log = log
	res, err := packaging.Build(ctx, o)
	if err != nil {
		return err
	}
	for _, a := range res.Artifacts {
		fmt.Println(a)
	}
	fmt.Println(res.Checksums)
	if res.Signature != "" {
		fmt.Println(res.Signature)
	}
	return nil
}

// verify checks DIR/SHA256SUMS.sig against a public key, then every file
// listed in DIR/SHA256SUMS.
func verify(args []string) error {
	fs := flag.NewFlagSet("vigil-package verify", flag.ContinueOnError)
	pubFile := fs.String("pub", "", "release public key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pubFile == "" || fs.NArg() != 1 {
		return errors.New("usage: vigil-package verify --pub release.pub DIR")
	}
	b, err := os.ReadFile(*pubFile)
	if err != nil {
		return fmt.Errorf("--pub: %w", err)
	}
	pub, err := packaging.ParsePublicKey(b)
	if err != nil {
		return err
	}
	dir := fs.Arg(0)
	if err := packaging.VerifyFile(pub, dir+"/"+packaging.ChecksumsFile); err != nil {
		return err
	}
	if err := packaging.VerifyChecksums(dir); err != nil {
		return err
	}
	fmt.Println("OK: signature and checksums verified")
	return nil
}
