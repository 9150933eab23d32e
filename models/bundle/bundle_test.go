package bundle

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testManifest() *Manifest {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Manifest{
		Name: "netflow-baseline", Detector: "netflow", Version: 7, FeatureSet: "netflow/v1", Dim: 115,
		Threshold: 0.25, Metrics: map[string]float64{"roc_auc": 0.97}, Created: created,
		Expires: created.Add(90 * 24 * time.Hour), MinAgentVersion: "0.1.0", Quantization: QuantInt8Dyn,
	}
}

var testModel = []byte("\x08\x08fake onnx bytes")

func packed(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(&buf, testModel, testManifest()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	path, err := WriteFile(dir, testModel, m)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "netflow-baseline-7.vgb" {
		t.Fatalf("path %s", path)
	}
	b, err := Read(path, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Model, testModel) || b.Manifest.Version != 7 || b.Manifest.Dim != 115 ||
		b.Manifest.Metrics["roc_auc"] != 0.97 || !b.Manifest.Created.Equal(m.Created) {
		t.Fatalf("bundle = %+v", b.Manifest)
	}
	if b.Manifest.ModelSHA256 != SHA256Hex(testModel) || b.Statement.Subject[0].Digest["sha256"] != SHA256Hex(testModel) {
		t.Fatal("digest not recorded")
	}
	if len(b.Envelope.Signatures) != 0 {
		t.Fatal("signatures should be empty")
	}
	d, err := Digest(path)
	if err != nil || !strings.HasPrefix(d, "sha256:") || len(d) != 7+64 {
		t.Fatalf("digest %q %v", d, err)
	}
	// Deterministic packing.
	if !bytes.Equal(packed(t), packed(t)) {
		t.Fatal("pack is not deterministic")
	}
	// The envelope carries the standard field names.
	var raw map[string]any
	if err := json.Unmarshal(b.EnvelopeJSON, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"payloadType", "payload", "signatures"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("envelope lacks %s", k)
		}
	}
}

type entry struct {
	name     string
	typ      byte
	data     []byte
	linkname string
	size     int64 // header size override when > 0
}

func mkTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.data)), Linkname: e.linkname, Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func envelopeFor(t *testing.T, mutate func(st map[string]any, env map[string]any)) []byte {
	t.Helper()
	m := testManifest()
	env, err := NewEnvelope(testModel, m)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	envMap := map[string]any{"payloadType": env.PayloadType, "signatures": []any{}}
	if mutate != nil {
		mutate(st, envMap)
	}
	p, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := envMap["payload"]; !ok {
		envMap["payload"] = base64.StdEncoding.EncodeToString(p)
	}
	out, err := json.Marshal(envMap)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pred(st map[string]any) map[string]any { return st["predicate"].(map[string]any) }

func TestReadMalformed(t *testing.T) {
	good := envelopeFor(t, nil)
	big := bytes.Repeat([]byte{1}, 2048)
	cases := []struct {
		name    string
		entries []entry
		raw     []byte
		lim     *Limits
		want    string
	}{
		{name: "empty", raw: []byte{}, want: "missing model.onnx"},
		{name: "garbage", raw: []byte("this is not a tar file at all, not even close................"), want: "tar"},
		{name: "missing envelope", entries: []entry{{name: ModelFile, data: testModel}}, want: "missing bundle.dsse.json"},
		{name: "missing model", entries: []entry{{name: EnvelopeFile, data: good}}, want: "missing model.onnx"},
		{name: "extra file", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, data: testModel}, {name: "x", data: []byte("1")}}, want: "unexpected entry"},
		{name: "duplicate model", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, data: testModel}, {name: ModelFile, data: testModel}}, want: "duplicate"},
		{name: "traversal", entries: []entry{{name: EnvelopeFile, data: good}, {name: "../model.onnx", data: testModel}}, want: "unexpected entry"},
		{name: "absolute", entries: []entry{{name: EnvelopeFile, data: good}, {name: "/model.onnx", data: testModel}}, want: "unexpected entry"},
		{name: "dot slash", entries: []entry{{name: EnvelopeFile, data: good}, {name: "./model.onnx", data: testModel}}, want: "unexpected entry"},
		{name: "directory", entries: []entry{{name: "model.onnx/", typ: tar.TypeDir}}, want: "not a regular file"},
		{name: "symlink", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, typ: tar.TypeSymlink, linkname: "/etc/passwd"}}, want: "not a regular file"},
		{name: "hardlink", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, typ: tar.TypeLink, linkname: EnvelopeFile}}, want: "not a regular file"},
		{name: "fifo", entries: []entry{{name: ModelFile, typ: tar.TypeFifo}}, want: "not a regular file"},
		{name: "model too large", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, data: big}}, lim: &Limits{MaxTotal: 1 << 20, MaxModel: 1024, MaxEnvelope: 1 << 20}, want: "exceeds limit"},
		{name: "envelope too large", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, data: testModel}}, lim: &Limits{MaxTotal: 1 << 20, MaxModel: 1 << 20, MaxEnvelope: 100}, want: "exceeds limit"},
		{name: "total too large", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, data: big}}, lim: &Limits{MaxTotal: 3000, MaxModel: 1 << 20, MaxEnvelope: 1 << 20}, want: "exceeds"},
		{name: "model digest mismatch", entries: []entry{{name: EnvelopeFile, data: good}, {name: ModelFile, data: []byte("other model")}}, want: "does not match"},
		{name: "envelope not json", entries: []entry{{name: EnvelopeFile, data: []byte("{")}, {name: ModelFile, data: testModel}}, want: "envelope"},
		{name: "wrong payload type", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(_, e map[string]any) { e["payloadType"] = "text/plain" })}, {name: ModelFile, data: testModel}}, want: "payloadType"},
		{name: "payload not base64", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(_, e map[string]any) { e["payload"] = "!!!" })}, {name: ModelFile, data: testModel}}, want: "base64"},
		{name: "unknown envelope field", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(_, e map[string]any) { e["extra"] = 1 })}, {name: ModelFile, data: testModel}}, want: "unknown field"},
		{name: "signatures missing", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(_, e map[string]any) { delete(e, "signatures") })}, {name: ModelFile, data: testModel}}, want: "signatures missing"},
		{name: "bad signature encoding", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(_, e map[string]any) { e["signatures"] = []any{map[string]any{"keyid": "k", "sig": "%%"}} })}, {name: ModelFile, data: testModel}}, want: "signature 0"},
		{name: "wrong statement type", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { s["_type"] = "https://in-toto.io/Statement/v0.1" })}, {name: ModelFile, data: testModel}}, want: "_type"},
		{name: "wrong predicate type", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { s["predicateType"] = "https://slsa.dev/provenance/v1" })}, {name: ModelFile, data: testModel}}, want: "predicateType"},
		{name: "two subjects", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { s["subject"] = append(s["subject"].([]any), s["subject"].([]any)[0]) })}, {name: ModelFile, data: testModel}}, want: "exactly one subject"},
		{name: "subject name", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { s["subject"].([]any)[0].(map[string]any)["name"] = "../x" })}, {name: ModelFile, data: testModel}}, want: "exactly one subject"},
		{name: "subject digest algo", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) {
			s["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha512": "00"}
		})}, {name: ModelFile, data: testModel}}, want: "sha256 digest"},
		{name: "unknown statement field", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { s["x"] = true })}, {name: ModelFile, data: testModel}}, want: "unknown field"},
		{name: "unknown predicate field", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["evil"] = 1 })}, {name: ModelFile, data: testModel}}, want: "unknown field"},
		{name: "predicate missing", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { delete(s, "predicate") })}, {name: ModelFile, data: testModel}}, want: "predicate missing"},
		{name: "version zero", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["version"] = 0 })}, {name: ModelFile, data: testModel}}, want: "version"},
		{name: "negative version", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["version"] = -1 })}, {name: ModelFile, data: testModel}}, want: "statement"},
		{name: "bad name", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["name"] = "../etc" })}, {name: ModelFile, data: testModel}}, want: "invalid name"},
		{name: "bad feature set", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["feature_set"] = "netflow" })}, {name: ModelFile, data: testModel}}, want: "feature set"},
		{name: "bad dim", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["dim"] = 0 })}, {name: ModelFile, data: testModel}}, want: "dim"},
		{name: "expired before created", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["expires"] = "2000-01-01T00:00:00Z" })}, {name: ModelFile, data: testModel}}, want: "expires"},
		{name: "bad quantization", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["quantization"] = "int4" })}, {name: ModelFile, data: testModel}}, want: "quantization"},
		{name: "manifest digest differs", entries: []entry{{name: EnvelopeFile, data: envelopeFor(t, func(s, _ map[string]any) { pred(s)["model_sha256"] = strings.Repeat("0", 64) })}, {name: ModelFile, data: testModel}}, want: "model_sha256 differs"},
		{name: "trailing json", entries: []entry{{name: EnvelopeFile, data: append(append([]byte{}, good...), []byte(" {}")...)}, {name: ModelFile, data: testModel}}, want: "trailing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				raw = mkTar(t, tc.entries)
			}
			lim := DefaultLimits()
			if tc.lim != nil {
				lim = *tc.lim
			}
			_, err := ReadFrom(bytes.NewReader(raw), lim)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestReadFileLimits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.vgb")
	if err := os.WriteFile(path, packed(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path, Limits{MaxTotal: 100, MaxModel: 100, MaxEnvelope: 100}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("size not enforced before reading: %v", err)
	}
	if _, err := Read(dir, DefaultLimits()); err == nil {
		t.Fatal("directory accepted")
	}
	if _, err := Read(path, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
}

func TestPAE(t *testing.T) {
	// Example from the DSSE specification's test vectors.
	got := string(PAE("http://example.com/HelloWorld", []byte("hello world")))
	want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
	if got != want {
		t.Fatalf("PAE = %q", got)
	}
}

func TestPackRejectsInvalidManifest(t *testing.T) {
	m := testManifest()
	m.Version = 0
	if err := Pack(&bytes.Buffer{}, testModel, m); err == nil {
		t.Fatal("packed an invalid manifest")
	}
}

func FuzzRead(f *testing.F) {
	var good bytes.Buffer
	if err := Pack(&good, testModel, testManifest()); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadFrom(bytes.NewReader(data), Limits{MaxTotal: 1 << 20, MaxModel: 1 << 20, MaxEnvelope: 1 << 16})
		if err == nil && SHA256Hex(b.Model) != b.Manifest.ModelSHA256 {
			t.Fatal("accepted a bundle whose model digest does not match")
		}
	})
}

func FuzzStatement(f *testing.F) {
	env, err := NewEnvelope(testModel, testManifest())
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(env)
	f.Add(good)
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, st, err := ParseEnvelope(data)
		if err == nil {
			if st.Predicate == nil || st.Predicate.Validate() != nil || len(st.Subject) != 1 {
				t.Fatal("accepted an invalid statement")
			}
		}
	})
}

// TestMinAgentVersion: min_agent_version must be a full semantic version, and an agent's
// release version (or a `git describe` of a release tag) is compared with it; a development
// build's version cannot be.
func TestMinAgentVersion(t *testing.T) {
	for _, tc := range []struct {
		min   string
		valid bool
	}{
		{"", true}, {"1.4.0", true}, {"v1.4.0", true}, {"1.4.0-rc.1", true},
		{"1.4", false}, {"1", false}, {"1234567", false}, {"latest", false}, {"1.4.0.1", false}, {"v01.4.0", false},
	} {
		m := testManifest()
		m.MinAgentVersion, m.ModelSHA256 = tc.min, strings.Repeat("a", 64)
		if err := m.Validate(); (err == nil) != tc.valid {
			t.Errorf("min_agent_version %q: %v, want valid %v", tc.min, err, tc.valid)
		}
	}
	for _, tc := range []struct {
		min, agent    string
		tooOld, known bool
	}{
		{"", "dev", false, true},
		{"1.4.0", "1.4.0", false, true},
		{"1.4.0", "v1.3.9", true, true},
		{"v1.4.0", "1.10.0", false, true},
		{"1.4.0", "v1.4.0-rc.2", true, true},
		{"1.4.0", "v1.3.0-12-g1a2b3c4", true, true},
		{"1.4.0", "v1.4.0-3-g1a2b3c4-dirty", false, true},
		{"1.4.0", "v1.4.0-dirty", false, true},
		{"1.4.0", "dev", false, false},
		{"1.4.0", "7e02d30", false, false},
		{"1.4.0", "7e02d30-dirty", false, false},
		{"1.4.0", "1234567", false, false},
		{"1.4.0", "", false, false},
	} {
		m := testManifest()
		m.MinAgentVersion = tc.min
		if tooOld, known := m.AgentTooOld(tc.agent); tooOld != tc.tooOld || known != tc.known {
			t.Errorf("min %q, agent %q: too old %v known %v, want %v %v", tc.min, tc.agent, tooOld, known, tc.tooOld, tc.known)
		}
	}
}

// envelopeWith is the unsigned envelope of testModel whose manifest is m
// as given, without Validate: what a signer could sign by hand.
func envelopeWith(t *testing.T, m *Manifest) []byte {
	t.Helper()
	m.ModelSHA256 = SHA256Hex(testModel)
	st := Statement{Type: StatementType, PredicateType: PredicateType, Predicate: m,
		Subject: []Subject{{Name: ModelFile, Digest: map[string]string{"sha256": m.ModelSHA256}}}}
	payload, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	env, err := json.Marshal(Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
		Signatures: []Signature{{KeyID: "k", Sig: "c2ln"}}})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestReadRefusesNarrowedThreshold: the plugins compare float32 scores with
// the manifest's float64 threshold narrowed to float32. A threshold below
// float32's smallest subnormal became 0 (every event flagged), one above its
// largest value +Inf (none flagged); the reader refuses both, and every
// other threshold a detector cannot use, naming the threshold.
func TestReadRefusesNarrowedThreshold(t *testing.T) {
	for _, tc := range []struct {
		name   string
		thr    float64
		metric map[string]float64
		want   string // "" = accepted
	}{
		{"ordinary", 0.25, nil, ""},
		{"smallest float32 subnormal", 1.401298464324817e-45, nil, ""},
		{"largest float32", math.MaxFloat32, nil, ""},
		{"underflows to 0", 1e-50, nil, "below float32's smallest value"},
		{"smallest float64", math.SmallestNonzeroFloat64, nil, "below float32's smallest value"},
		{"overflows to +Inf", 1e300, nil, "above float32's largest value"},
		{"just above float32 max", 3.5e38, nil, "above float32's largest value"},
		{"zero", 0, nil, "threshold 0 is not positive"},
		{"negative", -0.5, nil, "threshold -0.5 is not positive"},
		{"threshold-like metric underflows", 0.25, map[string]float64{"float_threshold": 1e-60}, `metric "float_threshold"`},
		{"threshold-like metric overflows", 0.25, map[string]float64{"threshold_p99": 1e60}, `metric "threshold_p99"`},
		{"other metric may be tiny", 0.25, map[string]float64{"benign_p50": 1e-60}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManifest()
			m.Threshold, m.Metrics = tc.thr, tc.metric
			var tarball bytes.Buffer
			if err := PackEnvelope(&tarball, testModel, envelopeWith(t, m), m.Created); err != nil {
				t.Fatal(err)
			}
			b, err := ReadFrom(&tarball, DefaultLimits())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ReadFrom: %v", err)
				}
				if thr, err := Threshold32(b.Manifest.Threshold); err != nil || thr != float32(tc.thr) {
					t.Fatalf("Threshold32(%g) = %g, %v", tc.thr, thr, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("read a bundle with threshold %g, metrics %v", tc.thr, tc.metric)
			}
			if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrThreshold) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want ErrInvalid and ErrThreshold, mentioning %q", err, tc.want)
			}
			// The writer refuses it too.
			if err := Pack(&bytes.Buffer{}, testModel, m); err == nil {
				t.Fatalf("packed threshold %g, metrics %v", tc.thr, tc.metric)
			}
		})
	}
}

func TestThreshold32(t *testing.T) {
	for _, tc := range []struct {
		in float64
		ok bool
	}{
		{0.5, true}, {1e-45, true}, {math.MaxFloat32, true}, {1e-46, false}, {1e39, false},
		{0, false}, {-1, false}, {math.NaN(), false}, {math.Inf(1), false}, {math.Inf(-1), false},
	} {
		got, err := Threshold32(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Threshold32(%g) = %g, %v; want ok %v", tc.in, got, err, tc.ok)
			continue
		}
		if tc.ok && (got == 0 || math.IsInf(float64(got), 0)) {
			t.Errorf("Threshold32(%g) = %g", tc.in, got)
		}
	}
}
