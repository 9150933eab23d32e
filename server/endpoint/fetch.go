package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// BundlePath is where a bundle of digest "sha256:<hex>" lives under dir:
// <dir>/<hex>.vgb. It returns false for a malformed digest.
func BundlePath(dir, digest string) (string, bool) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 {
		return "", false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return filepath.Join(dir, h+".vgb"), true
}

// handleFetch serves a FETCH stream: for each FetchRequest{digest, offset},
// the bundle's bytes from offset in FetchChunks of at most
// wirev1.MaxFetchChunk, the last one with eof set. An unknown digest gets a
// chunk with Error CodeNotFound, a malformed digest or an offset beyond the
// end one with CodeProtocol; the stream stays usable. The agent verifies
// what it fetched (signatures, digest); the server only names files by
// digest.
func (e *Endpoint) handleFetch(ctx context.Context, r *wirev1.Reader, w io.Writer) error {
	for {
		var req wirev1.FetchRequest
		if err := r.Read(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := e.serveFetch(ctx, &req, w); err != nil {
			return err
		}
	}
}

func fetchError(w io.Writer, code wirev1.ErrorCode, msg string) error {
	if err := writeFrame(w, &wirev1.FetchChunk{Error: &wirev1.Error{Code: uint32(code), Message: msg}}); err != nil {
		return fmt.Errorf("write fetch error: %w", err)
	}
	return nil
}

func (e *Endpoint) serveFetch(ctx context.Context, req *wirev1.FetchRequest, w io.Writer) error {
	path, ok := BundlePath(e.cfg.BundleDir, req.Digest)
	if !ok {
		return fetchError(w, wirev1.CodeProtocol, "malformed digest, want sha256:<64 lower-case hex>")
	}
	if e.cfg.BundleDir == "" {
		return fetchError(w, wirev1.CodeNotFound, "no such bundle")
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fetchError(w, wirev1.CodeNotFound, "no such bundle")
		}
		e.log.Error("fetch: open bundle", "path", path, "err", err)
		return fetchError(w, wirev1.CodeInternal, "server error")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		e.log.Error("fetch: stat bundle", "path", path, "err", err)
		return fetchError(w, wirev1.CodeInternal, "server error")
	}
	total := uint64(fi.Size())
	if req.Offset > total {
		return fetchError(w, wirev1.CodeProtocol, fmt.Sprintf("offset %d beyond the bundle's %d bytes", req.Offset, total))
	}
	off := req.Offset
	buf := make([]byte, min(wirev1.MaxFetchChunk, total-off))
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		n := 0
		if off < total {
			n, err = f.ReadAt(buf[:min(uint64(len(buf)), total-off)], int64(off))
			if err != nil && !errors.Is(err, io.EOF) {
				e.log.Error("fetch: read bundle", "path", path, "err", err)
				return fetchError(w, wirev1.CodeInternal, "server error")
			}
			if n == 0 { // the file shrank under us
				return fetchError(w, wirev1.CodeInternal, "bundle changed while reading")
			}
		}
		eof := off+uint64(n) >= total
		if err := writeFrame(w, &wirev1.FetchChunk{Data: buf[:n], Offset: off, Total: total, Eof: eof}); err != nil {
			return fmt.Errorf("write fetch chunk: %w", err)
		}
		e.m.fetchBytes.Add(float64(n))
		off += uint64(n)
		if eof {
			return nil
		}
	}
}
