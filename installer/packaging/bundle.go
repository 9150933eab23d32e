package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2/files"
)

// BundleName is the offline bundle's file name (without directory).
func BundleName(version, arch string) string {
	return fmt.Sprintf("vigil-agent-%s-linux-%s.tar.gz", version, arch)
}

// writeBundle writes the offline bundle: one top directory
// vigil-agent-<version>-linux-<arch>/ holding install.sh, payload.sha256
// and the package's files at their install paths relative to / (usr/...,
// etc/...), except the unit, which is under systemd/ (install.sh puts it in
// /etc/systemd/system).
func writeBundle(o *Options, s *pkgSpec, stage string) (string, error) {
	name := BundleName(o.Version, o.Arch)
	top := strings.TrimSuffix(name, ".tar.gz") + "/"
	out := filepath.Join(o.OutDir, name)
	err := writeAtomic(out, func(f *os.File) error {
		level := gzip.DefaultCompression
		if o.FastCompression {
			level = gzip.BestSpeed
		}
		zw, err := gzip.NewWriterLevel(f, level)
		if err != nil {
			return err
		}
		tw := tar.NewWriter(zw)
		hdr := func(name string, mode int64, typ byte, size int64) *tar.Header {
			return &tar.Header{Name: name, Mode: mode, Typeflag: typ, Size: size, ModTime: o.MTime,
				Uid: 0, Gid: 0, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		}
		dirs := map[string]bool{}
		addDir := func(d string) error {
			var chain []string
			for d != "" && d != "." && !dirs[d] {
				chain = append([]string{d}, chain...)
				d = filepath.Dir(d)
			}
			for _, c := range chain {
				dirs[c] = true
				if err := tw.WriteHeader(hdr(top+c+"/", 0o755, tar.TypeDir, 0)); err != nil {
					return err
				}
			}
			return nil
		}
		if err := tw.WriteHeader(hdr(top, 0o755, tar.TypeDir, 0)); err != nil {
			return err
		}
		var sums bytes.Buffer
		addFile := func(rel, src string, mode os.FileMode, listed bool) error {
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if err := addDir(filepath.Dir(rel)); err != nil {
				return err
			}
			if err := tw.WriteHeader(hdr(top+rel, int64(mode), tar.TypeReg, int64(len(data)))); err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
			if listed {
				sum := sha256.Sum256(data)
				fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), rel)
			}
			return nil
		}
		for _, e := range sortedEntries(s, FormatTar) {
			if e.typ == files.TypeDir {
				continue
			}
			rel := strings.TrimPrefix(e.dst, "/")
			if strings.HasPrefix(e.dst, "/etc/systemd/system/") {
				rel = "systemd/" + filepath.Base(e.dst)
			}
			if err := addFile(rel, e.src, e.mode, true); err != nil {
				return err
			}
		}
		if err := addFile("install.sh", filepath.Join(stage, "offline", "install.sh"), 0o755, false); err != nil {
			return err
		}
		if err := addFile("README.md", filepath.Join(stage, "README.md"), 0o644, false); err != nil {
			return err
		}
		version := []byte(o.Version + "\n")
		if err := tw.WriteHeader(hdr(top+"VERSION", 0o644, tar.TypeReg, int64(len(version)))); err != nil {
			return err
		}
		if _, err := tw.Write(version); err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr(top+"payload.sha256", 0o644, tar.TypeReg, int64(sums.Len()))); err != nil {
			return err
		}
		if _, err := io.Copy(tw, &sums); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return "", fmt.Errorf("offline bundle: %w", err)
	}
	return out, nil
}
