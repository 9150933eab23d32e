package update

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
)

// tarMember is one member of a hand-made .vgb.
type tarMember struct {
	hdr  tar.Header
	data []byte
	// short: write only the header (the member claims hdr.Size bytes that never follow).
	short bool
}

// craftTar writes members as a tar file next to ref (a signed bundle) and returns its path.
func craftTar(t *testing.T, dir, name string, members ...tarMember) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg && !m.short {
			h.Size = int64(len(m.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if m.short {
			// The header is in buf; stop here (the writer would insist on the missing bytes).
			_ = tw.Flush()
			break
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(m.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(members) == 0 || !members[len(members)-1].short {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cutFetcher serves a file but every attempt breaks after cutAt bytes (a stream that is always
// cut at the same point).
type cutFetcher struct {
	data     []byte
	cutAt    int
	attempts int
}

func (c *cutFetcher) Fetch(_ context.Context, _ string, off, _ uint64, w io.Writer) (uint64, error) {
	c.attempts++
	if int(off) < c.cutAt {
		if _, err := w.Write(c.data[off:c.cutAt]); err != nil {
			return 0, err
		}
	}
	return 0, errors.New("stream reset by peer")
}

// TestOfferRejectionsReported drives each hostile bundle through the whole offer path (offer →
// fetch → verify) with a fake server, and checks that it is rejected, never reaches the plugin,
// leaves the active model alone, and that the ModelStatus sent to the server says why.
func TestOfferRejectionsReported(t *testing.T) {
	e := newEnv(t)
	ff := &fakeFetcher{files: map[string][]byte{}}
	u := e.updater(nil)
	u.cfg.Fetcher = ff
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	stranger := signtest.NewSigner(t, sign.AlgEd25519)
	dir := t.TempDir()

	// A correctly signed bundle whose members the hostile tars reuse (so that the tar checks,
	// not the signature check, are what must refuse them).
	good := e.bundle("nf", 9, nil, "model-9")
	gb, err := bundle.Read(good, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	envM := tarMember{hdr: tar.Header{Name: bundle.EnvelopeFile}, data: gb.EnvelopeJSON}
	modelM := tarMember{hdr: tar.Header{Name: bundle.ModelFile}, data: gb.Model}

	unsigned := func() string {
		m := signtest.Manifest("nf", 7, e.now)
		p, err := bundle.WriteFile(t.TempDir(), []byte("model-7"), &m)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}()
	alteredManifest := func() string {
		p := e.bundle("nf", 6, nil, "model-6")
		b, _ := bundle.Read(p, bundle.DefaultLimits())
		payload, _ := sign.DecodeBase64(b.Envelope.Payload)
		payload = bytes.Replace(payload, []byte(`"threshold":0.5`), []byte(`"threshold":9.5`), 1)
		env := b.Envelope
		env.Payload = encodeB64(payload)
		j, _ := json.Marshal(env)
		return rewriteTar(t, p, nil, j)
	}()

	tests := []struct {
		name, path, want string
		policyK          int // 0: the env's threshold (1)
	}{
		{"unsigned", unsigned, "signature check failed", 0},
		{"untrusted key", e.bundle("nf", 2, nil, "m", stranger), "signature check failed", 0},
		{"below threshold", e.bundle("nf", 3, nil, "m", e.a), "signature check failed", 2},
		{"manifest altered", alteredManifest, "signature check failed", 0},
		{"model altered", rewriteTar(t, e.bundle("nf", 5, nil, "model-5"), []byte("model-X"), nil), "malformed or tampered", 0},
		{"dot-dot member", craftTar(t, dir, "dotdot.vgb", envM, tarMember{hdr: tar.Header{Name: "../" + bundle.ModelFile}, data: gb.Model}),
			"malformed or tampered", 0},
		{"extra dot-dot member", craftTar(t, dir, "extra.vgb", envM, modelM, tarMember{hdr: tar.Header{Name: "../../etc/cron.d/x"}, data: []byte("x")}),
			"malformed or tampered", 0},
		{"symlink member", craftTar(t, dir, "symlink.vgb", envM,
			tarMember{hdr: tar.Header{Name: bundle.ModelFile, Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}),
			"not a regular file", 0},
		{"hard link member", craftTar(t, dir, "hardlink.vgb", envM, modelM,
			tarMember{hdr: tar.Header{Name: "model2.onnx", Typeflag: tar.TypeLink, Linkname: bundle.ModelFile}}),
			"malformed or tampered", 0},
		{"oversized member", craftTar(t, dir, "oversized.vgb", envM,
			tarMember{hdr: tar.Header{Name: bundle.ModelFile, Size: bundle.DefaultLimits().MaxModel + 1}, short: true}),
			"exceeds limit", 0},
		{"oversized envelope", craftTar(t, dir, "bigenv.vgb",
			tarMember{hdr: tar.Header{Name: bundle.EnvelopeFile}, data: bytes.Repeat([]byte(" "), int(bundle.DefaultLimits().MaxEnvelope)+1)}, modelM),
			"exceeds limit", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.policyK
			if k == 0 {
				k = 1
			}
			if err := signtest.Policy(t, k, e.a, e.b).WriteFile(filepath.Join(e.state, TrustFile)); err != nil {
				t.Fatal(err)
			}
			rollout := "r-" + strings.ReplaceAll(tt.name, " ", "-")
			o, data := e.offer(tt.path, rollout)
			ff.files[o.Model.Digest] = data
			loads := len(e.loader.loads)
			u.processOffer(context.Background(), o)
			checkRejected(t, e, u, rollout, tt.want, loads)
		})
	}
}

// TestTruncatedDownload: the server's copy was truncated after publish (it announces fewer
// bytes than the offer), or the stream is always cut at the same point. Rejected with a reason
// that says so, never loaded.
func TestTruncatedDownload(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	install(t, u, e.bundle("nf", 1, nil, "model-1"))

	t.Run("server file truncated", func(t *testing.T) {
		ff := &fakeFetcher{files: map[string][]byte{}}
		u.cfg.Fetcher = ff
		o, data := e.offer(e.bundle("nf", 2, nil, strings.Repeat("model-2", 300)), "r-trunc")
		ff.files[o.Model.Digest] = data[:len(data)/2]
		loads := len(e.loader.loads)
		u.processOffer(context.Background(), o)
		checkRejected(t, e, u, "r-trunc", "smaller than offered", loads)
		if n := len(ff.offsets); n != 1 {
			t.Errorf("a truncated server copy was fetched %d times; retrying cannot help", n)
		}
	})
	t.Run("stream always cut", func(t *testing.T) {
		o, data := e.offer(e.bundle("nf", 3, nil, strings.Repeat("model-3", 300)), "r-cut")
		cf := &cutFetcher{data: data, cutAt: len(data) - 10}
		u.cfg.Fetcher = cf
		loads := len(e.loader.loads)
		u.processOffer(context.Background(), o)
		checkRejected(t, e, u, "r-cut", "stream reset by peer", loads)
		if cf.attempts < 2 {
			t.Errorf("a cut stream was not retried (%d attempts)", cf.attempts)
		}
	})
	t.Run("cut then truncated bytes under the right total", func(t *testing.T) {
		// The server claims the full size but its Fetch ends early without error.
		o, data := e.offer(e.bundle("nf", 4, nil, strings.Repeat("model-4", 300)), "r-short")
		u.cfg.Fetcher = fetchFunc(func(_ context.Context, _ string, off, _ uint64, w io.Writer) (uint64, error) {
			if int(off) < len(data)-100 {
				_, _ = w.Write(data[off : len(data)-100])
			}
			return uint64(len(data)), nil
		})
		loads := len(e.loader.loads)
		u.processOffer(context.Background(), o)
		checkRejected(t, e, u, "r-short", "short", loads)
	})
}

type fetchFunc func(ctx context.Context, digest string, off, max uint64, w io.Writer) (uint64, error)

func (f fetchFunc) Fetch(ctx context.Context, digest string, off, max uint64, w io.Writer) (uint64, error) {
	return f(ctx, digest, off, max, w)
}

// checkRejected: the last status of rollout is "rejected" with a reason containing want, no
// status of it was "verified"/"active", the plugin saw no load since loadsBefore, and version 1
// (the first installed) is still active.
func checkRejected(t *testing.T, e *env, u *Updater, rollout, want string, loadsBefore int) {
	t.Helper()
	st, reason := e.lastState(rollout)
	if st != StateRejected || !strings.Contains(reason, want) {
		t.Fatalf("status %q reason %q, want rejected containing %q", st, reason, want)
	}
	if len(reason) > 1024 {
		t.Errorf("reason is %d bytes long", len(reason))
	}
	e.mu.Lock()
	for _, r := range e.reports {
		if r.RolloutId == rollout && (r.State == StateVerified || r.State == StateActive) {
			t.Errorf("rollout %s reported %s", rollout, r.State)
		}
	}
	e.mu.Unlock()
	if len(e.loader.loads) != loadsBefore {
		t.Fatalf("a rejected bundle reached the plugin: %v", e.loader.loads[loadsBefore:])
	}
	if a, ok := u.Active("netflow", "netflow/v1"); !ok || a.Manifest.Version != 1 {
		t.Fatalf("active = %+v %v, want version 1", a, ok)
	}
	t.Logf("reported: %s: %s", st, reason)
}
