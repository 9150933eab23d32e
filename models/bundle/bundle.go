// Package bundle writes and reads Vigil model bundles.
//
// A bundle is one uncompressed tar file, NAME-VERSION.vgb, holding exactly two regular files:
// model.onnx and bundle.dsse.json. The latter is a DSSE envelope whose payload is an in-toto
// Statement v1: its one subject is model.onnx with its SHA-256, its predicate is the Manifest.
// Signatures are added by the update machinery (sigstore's DSSE signer); this package leaves the
// list empty and keeps the envelope standard so that adding them changes nothing else.
//
// Read is strict because bundles come from outside: bounded sizes before anything is read, only the
// two expected regular files (no directories, links, devices, traversal or duplicates), the payload
// type checked, the statement and the manifest parsed with unknown fields rejected, and the model's
// digest compared with the statement's subject. Read does not verify signatures.
package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/mod/semver"
)

// File names inside a bundle and the fixed type identifiers.
const (
	ModelFile     = "model.onnx"
	EnvelopeFile  = "bundle.dsse.json"
	PayloadType   = "application/vnd.in-toto+json"
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://vigil-edge.dev/model-manifest/v1"
	Extension     = ".vgb"
)

// Quantization values of Manifest.Quantization.
const (
	QuantNone       = "none"
	QuantInt8Dyn    = "int8-dynamic"
	QuantInt8Static = "int8-qdq"
)

// Manifest describes a model; it is the predicate of the bundle's in-toto statement.
type Manifest struct {
	Name            string             `json:"name"`
	Detector        string             `json:"detector"`
	Version         uint64             `json:"version"`
	FeatureSet      string             `json:"feature_set"`
	Dim             int                `json:"dim"`
	Threshold       float64            `json:"threshold"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	Created         time.Time          `json:"created"`
	Expires         time.Time          `json:"expires"`
	MinAgentVersion string             `json:"min_agent_version,omitempty"`
	ModelSHA256     string             `json:"model_sha256"`
	Quantization    string             `json:"quantization"`
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	featureRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}/v[0-9]{1,4}$`)
	hexRE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// MaxDim bounds the feature dimension a manifest may declare.
const MaxDim = 1 << 16

// Validate checks the manifest's fields (but not ModelSHA256 against a model).
func (m *Manifest) Validate() error {
	switch {
	case !nameRE.MatchString(m.Name):
		return fmt.Errorf("manifest: invalid name %q", m.Name)
	case !nameRE.MatchString(m.Detector):
		return fmt.Errorf("manifest: invalid detector %q", m.Detector)
	case m.Version == 0:
		return errors.New("manifest: version must be > 0")
	case !featureRE.MatchString(m.FeatureSet):
		return fmt.Errorf("manifest: invalid feature set %q (want name/vN)", m.FeatureSet)
	case m.Dim <= 0 || m.Dim > MaxDim:
		return fmt.Errorf("manifest: invalid dim %d", m.Dim)
	case checkThreshold("threshold", m.Threshold, false) != nil:
		// Zero passes here (a placeholder while a trainer checks its flags
		// before calibrating); NewEnvelope and ParseEnvelope want > 0.
		return fmt.Errorf("manifest: %w", checkThreshold("threshold", m.Threshold, false))
	case m.Created.IsZero():
		return errors.New("manifest: created missing")
	case !m.Expires.After(m.Created):
		return errors.New("manifest: expires must be after created")
	case !hexRE.MatchString(m.ModelSHA256):
		return fmt.Errorf("manifest: model_sha256 %q is not 64 lowercase hex digits", m.ModelSHA256)
	}
	switch m.Quantization {
	case QuantNone, QuantInt8Dyn, QuantInt8Static:
	default:
		return fmt.Errorf("manifest: unknown quantization %q", m.Quantization)
	}
	for k, v := range m.Metrics {
		if k == "" || len(k) > 64 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("manifest: invalid metric %q", k)
		}
		// A metric named as a threshold is held to the threshold's rule,
		// in case a reader ever takes it for one.
		if strings.Contains(k, "threshold") {
			if err := checkThreshold("metric "+strconv.Quote(k), v, false); err != nil {
				return fmt.Errorf("manifest: %w", err)
			}
		}
	}
	if len(m.MinAgentVersion) > 64 {
		return errors.New("manifest: min_agent_version too long")
	}
	if err := CheckMinAgentVersion(m.MinAgentVersion); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// ErrThreshold is wrapped by every error about a threshold that a detector
// cannot use as it is.
var ErrThreshold = errors.New("unusable threshold")

// Threshold32 is v as the float32 the detector plugins compare their scores
// with, or an error (wrapping ErrThreshold) when v is not a finite positive
// number or does not survive the narrowing: below float32's smallest
// subnormal it would become 0 (every score flagged), above its largest
// finite value +Inf (none flagged). Plugins narrow a bundle's threshold, and
// any threshold they receive otherwise, through it.
func Threshold32(v float64) (float32, error) {
	if err := checkThreshold("threshold", v, true); err != nil {
		return 0, err
	}
	return float32(v), nil
}

// checkThreshold checks a threshold-like value: finite, not negative
// (positive with positive), and one that narrows to float32 without
// becoming 0 or infinite.
func checkThreshold(what string, v float64, positive bool) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Errorf("%w: %s %v is not finite", ErrThreshold, what, v)
	case v < 0 || (positive && v == 0):
		return fmt.Errorf("%w: %s %v is not positive", ErrThreshold, what, v)
	case float32(v) == 0 && v != 0:
		return fmt.Errorf("%w: %s %g is below float32's smallest value (it would become 0: every score flagged)", ErrThreshold, what, v)
	case math.IsInf(float64(float32(v)), 0):
		return fmt.Errorf("%w: %s %g is above float32's largest value (it would become +Inf: nothing flagged)", ErrThreshold, what, v)
	}
	return nil
}

// CheckMinAgentVersion validates a min_agent_version: empty, or a semantic version with all
// three numbers ("1.4.0", "v1.4.0", "1.4.0-rc.1").
func CheckMinAgentVersion(v string) error {
	if v != "" && !fullVersion(canonVersion(v)) {
		return fmt.Errorf("min_agent_version %q is not a semantic version (e.g. 1.4.0)", v)
	}
	return nil
}

// fullVersion reports whether v is a semantic version with all three numbers
// (semver.IsValid also takes the shorthands "v1" and "v1.2", which a bare
// commit id of digits would pass for).
func fullVersion(v string) bool {
	return semver.IsValid(v) && fullVersionRE.MatchString(v)
}

var fullVersionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+([-+]|$)`)

// canonVersion gives v the "v" prefix golang.org/x/mod/semver expects.
func canonVersion(v string) string {
	if strings.HasPrefix(v, "v") {
		return v
	}
	return "v" + v
}

// gitDescribeSuffix is what `git describe --tags --dirty` adds to a tag:
// commits since it and the commit ("-4-g1a2b3c4"), and "-dirty".
var gitDescribeSuffix = regexp.MustCompile(`(-[0-9]+-g[0-9a-f]{4,40})?(-dirty)?$`)

// AgentTooOld reports whether an agent of version agent is older than the
// manifest's min_agent_version. The agent's version is its release version
// ("1.4.0", "v1.4.0"), or a `git describe` of a release tag, which counts as
// that release ("v1.4.0-3-g1a2b3c4-dirty" is 1.4.0). A version that is neither
// (a development build: "dev", a bare commit) cannot be compared: known is
// false, and the caller decides.
func (m *Manifest) AgentTooOld(agent string) (tooOld, known bool) {
	if m.MinAgentVersion == "" {
		return false, true
	}
	want := canonVersion(m.MinAgentVersion)
	have := canonVersion(gitDescribeSuffix.ReplaceAllString(agent, ""))
	if !fullVersion(want) || !fullVersion(have) {
		return false, false
	}
	return semver.Compare(have, want) < 0, true
}

// FileName is the bundle's canonical file name, NAME-VERSION.vgb.
func (m *Manifest) FileName() string {
	return m.Name + "-" + strconv.FormatUint(m.Version, 10) + Extension
}

// Envelope is a DSSE envelope (https://github.com/secure-systems-lab/dsse).
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"` // base64 (standard encoding)
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// Statement is an in-toto Statement v1 whose predicate is a Manifest.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     *Manifest `json:"predicate"`
}

// Subject is an in-toto resource descriptor (name and digests only).
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// PAE is DSSE's pre-authentication encoding, what a signature covers.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "DSSEv1 %d %s %d ", len(payloadType), payloadType, len(payload))
	b.Write(payload)
	return b.Bytes()
}

// Limits bound what Read accepts.
type Limits struct {
	MaxTotal    int64 // whole .vgb file
	MaxModel    int64 // model.onnx
	MaxEnvelope int64 // bundle.dsse.json
}

// DefaultLimits: 64 MiB in total, 64 MiB of model, 1 MiB of envelope.
func DefaultLimits() Limits {
	return Limits{MaxTotal: 64 << 20, MaxModel: 64 << 20, MaxEnvelope: 1 << 20}
}

// Bundle is a bundle read from disk.
type Bundle struct {
	Manifest     Manifest
	Model        []byte
	Envelope     Envelope
	EnvelopeJSON []byte // the raw envelope, for signature verification
	Statement    Statement
}

// ErrInvalid is wrapped by every error about a malformed bundle (as opposed to I/O errors).
var ErrInvalid = errors.New("invalid bundle")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// SHA256Hex is the lowercase hex SHA-256 of b.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// NewEnvelope builds the unsigned envelope for a model and manifest; it sets m.ModelSHA256.
func NewEnvelope(model []byte, m *Manifest) (*Envelope, error) {
	m.ModelSHA256 = SHA256Hex(model)
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if _, err := Threshold32(m.Threshold); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	st := Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: ModelFile, Digest: map[string]string{"sha256": m.ModelSHA256}}},
		PredicateType: PredicateType,
		Predicate:     m,
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode statement: %w", err)
	}
	return &Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(payload), Signatures: []Signature{}}, nil
}

// Pack writes a bundle for model and m to w. It fills m.ModelSHA256. The tar is deterministic:
// fixed order (envelope first, so a streaming reader sees the statement before the model), mode
// 0644, owner 0, and both entries dated m.Created.
func Pack(w io.Writer, model []byte, m *Manifest) error {
	env, err := NewEnvelope(model, m)
	if err != nil {
		return fmt.Errorf("pack bundle: %w", err)
	}
	envJSON, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return fmt.Errorf("pack bundle: encode envelope: %w", err)
	}
	return PackEnvelope(w, model, envJSON, m.Created)
}

// PackEnvelope writes a bundle from an already encoded (for example, signed) envelope.
func PackEnvelope(w io.Writer, model, envelopeJSON []byte, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{{EnvelopeFile, envelopeJSON}, {ModelFile, model}} {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)),
			ModTime: mtime.UTC().Truncate(time.Second), Format: tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("pack bundle: %s header: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("pack bundle: %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack bundle: close tar: %w", err)
	}
	return nil
}

// Read reads and checks the bundle at path (signatures are not verified).
func Read(path string, lim Limits) (*Bundle, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever, before
	// the regular-file check below could refuse it. It changes nothing for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, invalid("%s is not a regular file", path)
	}
	if st.Size() > lim.MaxTotal {
		return nil, invalid("size %d exceeds limit %d", st.Size(), lim.MaxTotal)
	}
	b, err := ReadFrom(f, lim)
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", path, err)
	}
	return b, nil
}

type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

var errTooLarge = errors.New("too large")

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.max {
		// Allow reading exactly max bytes; one more byte is an error.
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.max-c.n {
		p = p[:c.max-c.n]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ReadFrom reads a bundle from a stream; at most lim.MaxTotal bytes are consumed.
func ReadFrom(r io.Reader, lim Limits) (*Bundle, error) {
	cr := &countingReader{r: r, max: lim.MaxTotal}
	tr := tar.NewReader(cr)
	var model, envJSON []byte
	var haveModel, haveEnv bool
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errTooLarge) {
			return nil, invalid("bundle exceeds %d bytes", lim.MaxTotal)
		}
		if err != nil {
			return nil, invalid("tar: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA { //nolint:staticcheck // accept old regular-file flag
			return nil, invalid("entry %q: type %q is not a regular file", hdr.Name, hdr.Typeflag)
		}
		var limit int64
		var dst *[]byte
		var seen *bool
		switch hdr.Name {
		case ModelFile:
			limit, dst, seen = lim.MaxModel, &model, &haveModel
		case EnvelopeFile:
			limit, dst, seen = lim.MaxEnvelope, &envJSON, &haveEnv
		default:
			return nil, invalid("unexpected entry %q", hdr.Name)
		}
		if *seen {
			return nil, invalid("duplicate entry %q", hdr.Name)
		}
		*seen = true
		if hdr.Size < 0 || hdr.Size > limit {
			return nil, invalid("entry %q: size %d exceeds limit %d", hdr.Name, hdr.Size, limit)
		}
		buf := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, buf); err != nil {
			if errors.Is(err, errTooLarge) {
				return nil, invalid("bundle exceeds %d bytes", lim.MaxTotal)
			}
			return nil, invalid("entry %q: %v", hdr.Name, err)
		}
		*dst = buf
	}
	if !haveModel {
		return nil, invalid("missing %s", ModelFile)
	}
	if !haveEnv {
		return nil, invalid("missing %s", EnvelopeFile)
	}
	env, stmt, err := ParseEnvelope(envJSON)
	if err != nil {
		return nil, err
	}
	sum := SHA256Hex(model)
	if stmt.Subject[0].Digest["sha256"] != sum {
		return nil, invalid("model.onnx sha256 %s does not match the statement's subject", sum)
	}
	return &Bundle{Manifest: *stmt.Predicate, Model: model, Envelope: *env, EnvelopeJSON: envJSON, Statement: *stmt}, nil
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.URLEncoding.DecodeString(s) // DSSE allows either alphabet
}

// ParseEnvelope parses a DSSE envelope and its in-toto statement strictly. It checks the payload
// type, the statement and predicate types, the single model.onnx subject (sha256 matching the
// manifest's model_sha256) and validates the manifest. Signatures are only syntax-checked.
func ParseEnvelope(data []byte) (*Envelope, *Statement, error) {
	var env Envelope
	if err := decodeStrict(data, &env); err != nil {
		return nil, nil, invalid("envelope: %v", err)
	}
	if env.PayloadType != PayloadType {
		return nil, nil, invalid("envelope payloadType %q, want %q", env.PayloadType, PayloadType)
	}
	if env.Signatures == nil {
		return nil, nil, invalid("envelope: signatures missing")
	}
	for i, s := range env.Signatures {
		if _, err := decodeBase64(s.Sig); err != nil || s.Sig == "" {
			return nil, nil, invalid("envelope: signature %d is not base64", i)
		}
	}
	payload, err := decodeBase64(env.Payload)
	if err != nil {
		return nil, nil, invalid("envelope payload is not base64: %v", err)
	}
	var st Statement
	if err := decodeStrict(payload, &st); err != nil {
		return nil, nil, invalid("statement: %v", err)
	}
	if st.Type != StatementType {
		return nil, nil, invalid("statement _type %q, want %q", st.Type, StatementType)
	}
	if st.PredicateType != PredicateType {
		return nil, nil, invalid("statement predicateType %q, want %q", st.PredicateType, PredicateType)
	}
	if len(st.Subject) != 1 || st.Subject[0].Name != ModelFile {
		return nil, nil, invalid("statement must have exactly one subject named %s", ModelFile)
	}
	d := st.Subject[0].Digest
	if len(d) != 1 || !hexRE.MatchString(d["sha256"]) {
		return nil, nil, invalid("statement subject must carry exactly one sha256 digest (64 lowercase hex)")
	}
	if st.Predicate == nil {
		return nil, nil, invalid("statement predicate missing")
	}
	if err := st.Predicate.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := Threshold32(st.Predicate.Threshold); err != nil {
		return nil, nil, fmt.Errorf("%w: manifest: %w", ErrInvalid, err)
	}
	if st.Predicate.ModelSHA256 != d["sha256"] {
		return nil, nil, invalid("manifest model_sha256 differs from the statement's subject digest")
	}
	return &env, &st, nil
}

// Digest is "sha256:<hex>" of the whole bundle file, the id servers and agents use for it. Only a
// regular file is hashed (a symbolic link to one is followed), refused otherwise with an error
// wrapping ErrInvalid, at once: it is opened with O_NONBLOCK, as in Read, since opening a named
// pipe for reading waits for a writer, forever (a FIFO named *.vgb in a model directory, the
// agent's discovery digests what it lists). The file is streamed: no size bound is needed here,
// and the callers read the bundle with Read's limits as well.
func Digest(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("digest bundle: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("digest bundle: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("digest bundle: %w", invalid("%s is not a regular file", path))
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest bundle %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// WriteFile packs the bundle into dir/NAME-VERSION.vgb atomically (temp file, fsync, rename) and
// returns the path.
func WriteFile(dir string, model []byte, m *Manifest) (string, error) {
	var buf bytes.Buffer
	if err := Pack(&buf, model, m); err != nil {
		return "", err
	}
	path := dir + string(os.PathSeparator) + m.FileName()
	tmp, err := os.CreateTemp(dir, ".vgb-*")
	if err != nil {
		return "", fmt.Errorf("write bundle: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write bundle: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write bundle: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write bundle: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("write bundle: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("write bundle: %w", err)
	}
	return path, nil
}
