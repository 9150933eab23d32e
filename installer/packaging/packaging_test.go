package packaging

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVersionFromDescribe(t *testing.T) {
	for _, tc := range []struct {
		describe string
		commits  int
		want     string
		err      bool
	}{
		{"v1.2.3", 10, "1.2.3", false},
		{"1.2.3", 10, "1.2.3", false},
		{"v1.2.3-dirty", 10, "1.2.3.dirty", false},
		{"v1.2.3-rc.1", 10, "1.2.3~rc.1", false},
		{"v1.2.3-4-gabcdef0", 10, "1.2.3+git4.abcdef0", false},
		{"v1.2.3-rc.1-4-gabcdef0-dirty", 10, "1.2.3~rc.1+git4.abcdef0.dirty", false},
		{"abcdef0", 12, "0.0.0~git12.abcdef0", false},
		{"abcdef0-dirty", 12, "0.0.0~git12.abcdef0.dirty", false},
		{"  v2.0\n", 1, "2.0", false},
		{"release-2024", 1, "", true},
		{"v1.2.3-foo bar", 1, "", true},
		{"", 1, "", true},
	} {
		got, err := VersionFromDescribe(tc.describe, tc.commits)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("VersionFromDescribe(%q, %d) = %q, %v; want %q, error %v", tc.describe, tc.commits, got, err, tc.want, tc.err)
		}
	}
}

func TestValidateVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"1.0.0": true, "0.0.0~git3.abc": true, "1.2+git1.a": true,
		"": false, "v1.0": false, "1.0-1": false, "1:1.0": false, "1.0 beta": false, "1/0": false,
	} {
		if err := ValidateVersion(v); (err == nil) != ok {
			t.Errorf("ValidateVersion(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}

// The version ordering dpkg and rpm apply must match release order.
func TestVersionOrderWithDpkg(t *testing.T) {
	if _, err := os.Stat("/usr/bin/dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	order := []string{"0.0.0~git3.abc", "0.0.0~git12.abc", "1.2.3~rc.1", "1.2.3", "1.2.3+git4.abcdef0", "1.2.3+git4.abcdef0.dirty", "1.2.4"}
	for i := 0; i+1 < len(order); i++ {
		cmd := exec.Command("dpkg", "--compare-versions", order[i], "lt", order[i+1])
		if err := cmd.Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", order[i], order[i+1])
		}
	}
}

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.deb", "b.rpm"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("content of "+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteChecksums(dir, []string{"b.rpm", "a.deb"}); err != nil {
		t.Fatal(err)
	}
	sums, _ := os.ReadFile(filepath.Join(dir, ChecksumsFile))
	if lines := strings.Split(strings.TrimSpace(string(sums)), "\n"); len(lines) != 2 || !strings.HasSuffix(lines[0], "  a.deb") {
		t.Fatalf("SHA256SUMS:\n%s", sums)
	}
	if err := VerifyChecksums(dir); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Both PEM forms of the key load.
	sec1, _ := x509.MarshalECPrivateKey(key)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	for _, b := range []*pem.Block{{Type: "EC PRIVATE KEY", Bytes: sec1}, {Type: "PRIVATE KEY", Bytes: pkcs8}} {
		k, err := ParseSigningKey(pem.EncodeToMemory(b))
		if err != nil || !k.Equal(key) {
			t.Fatalf("ParseSigningKey(%s): %v", b.Type, err)
		}
	}
	if _, err := ParseSigningKey([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")); err == nil {
		t.Error("encrypted key accepted")
	}
	sumsPath := filepath.Join(dir, ChecksumsFile)
	if err := SignFile(key, sumsPath); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub, err := ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyFile(pub, sumsPath); err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := VerifyFile(&other.PublicKey, sumsPath); err == nil {
		t.Error("signature verified with another key")
	}
	// Tampering is detected: a changed artifact, a changed SHA256SUMS.
	if err := os.WriteFile(filepath.Join(dir, "a.deb"), []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := VerifyChecksums(dir); err == nil {
		t.Error("changed artifact not detected")
	}
	if err := os.WriteFile(sumsPath, append(sums, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := VerifyFile(pub, sumsPath); err == nil {
		t.Error("changed SHA256SUMS verified")
	}
}

// fakeBin makes a bin/ directory with stand-in binaries.
func fakeBin(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	for _, n := range []string{"vigil-agent", "vigil-server", "vigilctl", "vigil-detector-netflow", "vigil-detector-example", "vigil-trafficgen"} {
		if err := os.WriteFile(filepath.Join(bin, n), []byte("#!/bin/sh\necho "+n+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"lib/libonnxruntime.so", "models/netflow-1.vgb"} {
		p := filepath.Join(bin, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func TestBuildFakeBinaries(t *testing.T) {
	bin := fakeBin(t)
	out := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	res, err := Build(context.Background(), Options{
		BinDir: bin, OutDir: out, Version: "1.0.0~test1", SigningKey: key, FastCompression: true,
		MTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range res.Artifacts {
		names = append(names, filepath.Base(a))
	}
	want := []string{
		"vigil-agent_1.0.0~test1_amd64.deb", "vigil-agent-1.0.0~test1-1.x86_64.rpm",
		"vigil-server_1.0.0~test1_amd64.deb", "vigil-server-1.0.0~test1-1.x86_64.rpm",
		"vigil-agent-1.0.0~test1-linux-amd64.tar.gz",
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("artifacts %q, want %q", names, want)
	}
	if err := VerifyFile(&key.PublicKey, res.Checksums); err != nil || res.Signature == "" {
		t.Errorf("signature: %v", err)
	}
	if err := VerifyChecksums(out); err != nil {
		t.Error(err)
	}

	// The offline bundle: layout, modes, payload list; no example plugin,
	// no trust policy (none given), no test tool.
	f, err := os.Open(filepath.Join(out, want[4]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	modes := map[string]int64{}
	var payload string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, "vigil-agent-1.0.0~test1-linux-amd64/") || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("entry %s uid %d gid %d", h.Name, h.Uid, h.Gid)
		}
		name := strings.TrimPrefix(h.Name, "vigil-agent-1.0.0~test1-linux-amd64/")
		modes[name] = h.Mode
		if name == "payload.sha256" {
			b, _ := io.ReadAll(tr)
			payload = string(b)
		}
	}
	for name, mode := range map[string]int64{
		"install.sh": 0o755, "usr/bin/vigil-agent": 0o755, "usr/lib/vigil/plugins/vigil-detector-netflow": 0o755,
		"usr/lib/vigil/lib/libonnxruntime.so": 0o644, "usr/share/vigil/models/netflow-1.vgb": 0o644,
		"etc/vigil/agent.yaml": 0o644, "systemd/vigil-agent.service": 0o644, "usr/lib/sysctl.d/60-vigil.conf": 0o644,
		"usr/share/doc/vigil-agent/copyright": 0o644, "VERSION": 0o644,
	} {
		if got, ok := modes[name]; !ok || got != mode {
			t.Errorf("bundle %s: mode %o present %v, want %o", name, got, ok, mode)
		}
		if strings.HasPrefix(name, "usr/") && !strings.Contains(payload, "  "+name+"\n") {
			t.Errorf("payload.sha256 lacks %s", name)
		}
	}
	for _, name := range []string{"usr/lib/vigil/plugins/vigil-detector-example", "etc/vigil/trust.json", "usr/bin/vigil-trafficgen",
		"usr/share/lintian/overrides/vigil-agent", "usr/share/doc/vigil-agent/changelog.gz"} {
		if _, ok := modes[name]; ok {
			t.Errorf("bundle has %s", name)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	bin := fakeBin(t)
	for name, o := range map[string]Options{
		"bad version": {BinDir: bin, OutDir: t.TempDir(), Version: "1.0-1"},
		"no server":   {BinDir: t.TempDir(), OutDir: t.TempDir(), Version: "1.0"},
		"bad format":  {BinDir: bin, OutDir: t.TempDir(), Version: "1.0", Formats: []string{"apk"}},
		"bad trust":   {BinDir: bin, OutDir: t.TempDir(), Version: "1.0", TrustPolicy: filepath.Join(bin, "vigil-agent")},
	} {
		if _, err := Build(context.Background(), o); err == nil {
			t.Errorf("%s: Build succeeded", name)
		}
	}
	// Plugins without ONNX Runtime.
	if err := os.Remove(filepath.Join(bin, "lib", "libonnxruntime.so")); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), Options{BinDir: bin, OutDir: t.TempDir(), Version: "1.0"}); err == nil {
		t.Error("Build without libonnxruntime.so succeeded")
	}
}

func FuzzVersionFromDescribe(f *testing.F) {
	for _, s := range []string{"v1.2.3", "v1.2.3-4-gabcdef0-dirty", "abcdef0", "v1.2.3-rc.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := VersionFromDescribe(s, 7)
		if err == nil {
			if err := ValidateVersion(v); err != nil {
				t.Fatalf("VersionFromDescribe(%q) = %q, invalid: %v", s, v, err)
			}
		}
	})
}
