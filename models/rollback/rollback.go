// Package rollback defines the signed rollback instruction: the only way an agent accepts a model
// bundle whose version is not greater than the active one (DESIGN.md section 6).
//
// An instruction is a DSSE envelope of payload type PayloadType whose payload is a JSON
// Instruction naming exactly one bundle (detector, name, version and the model's SHA-256, which
// stays the same when signatures are added to the bundle) with a short validity window. It is
// signed with the same release keys and threshold as bundles (models/trust.Policy.VerifyEnvelope),
// so an attacker who can replay old, validly signed bundles still cannot make an agent go back
// to one (rollback attack) without a fresh instruction from the release engineers.
//
// Typical use:
//
//	vigilctl model rollback --key release.key --bundle netflow-3.vgb --ttl 24h --out rb.json
//	vigil-agent update --bundle netflow-3.vgb --rollback rb.json      (air-gapped)
//	vigilctl rollout create --model netflow@3 --agents a-1 --rollback-instruction rb.json
package rollback

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/trust"
)

// PayloadType is the DSSE payload type of a rollback instruction.
const PayloadType = "application/vnd.vigil.model-rollback+json"

// MaxSize bounds an instruction envelope; MaxTTL bounds its validity window.
const (
	MaxSize = 64 << 10
	MaxTTL  = 30 * 24 * time.Hour
)

// ErrInvalid is wrapped by every error about a malformed instruction.
var ErrInvalid = errors.New("invalid rollback instruction")

// Instruction allows one agent-side downgrade to the named bundle.
type Instruction struct {
	Type        string    `json:"_type"` // always PayloadType
	Detector    string    `json:"detector"`
	Name        string    `json:"name"`
	Version     uint64    `json:"version"`
	ModelSHA256 string    `json:"model_sha256"` // manifest.ModelSHA256 of the target bundle
	Issued      time.Time `json:"issued"`
	Expires     time.Time `json:"expires"`
	Reason      string    `json:"reason,omitempty"`
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	hexRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks the fields (not the signatures, not the time).
func (in *Instruction) Validate() error {
	switch {
	case in.Type != PayloadType:
		return invalid("_type %.80q", in.Type)
	case !nameRE.MatchString(in.Detector):
		return invalid("detector %.80q", in.Detector)
	case !nameRE.MatchString(in.Name):
		return invalid("name %.80q", in.Name)
	case in.Version == 0:
		return invalid("version 0")
	case !hexRE.MatchString(in.ModelSHA256):
		return invalid("model_sha256 is not 64 lowercase hex digits")
	case in.Issued.IsZero() || !in.Expires.After(in.Issued):
		return invalid("expires must be after issued")
	case in.Expires.Sub(in.Issued) > MaxTTL:
		return invalid("validity %s longer than %s", in.Expires.Sub(in.Issued), MaxTTL)
	case len(in.Reason) > 512:
		return invalid("reason longer than 512 bytes")
	}
	return nil
}

// For builds an instruction for the bundle's manifest, valid from now for ttl.
func For(m *bundle.Manifest, now time.Time, ttl time.Duration, reason string) Instruction {
	return Instruction{
		Type: PayloadType, Detector: m.Detector, Name: m.Name, Version: m.Version, ModelSHA256: m.ModelSHA256,
		Issued: now.UTC().Truncate(time.Second), Expires: now.UTC().Add(ttl).Truncate(time.Second), Reason: reason,
	}
}

// Sign encodes in as a DSSE envelope signed by every signer, as indented JSON.
func Sign(in Instruction, signers ...*sign.Signer) ([]byte, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("encode rollback instruction: %w", err)
	}
	env := bundle.Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(payload), Signatures: []bundle.Signature{}}
	for _, s := range signers {
		if err := sign.SignEnvelope(&env, s); err != nil {
			return nil, fmt.Errorf("sign rollback instruction: %w", err)
		}
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode rollback instruction: %w", err)
	}
	return append(out, '\n'), nil
}

// Parse decodes an envelope and its instruction strictly (bounded size, unknown fields and
// trailing data rejected). It does NOT verify signatures: use Verify.
func Parse(data []byte) (bundle.Envelope, Instruction, error) {
	var env bundle.Envelope
	var in Instruction
	if len(data) > MaxSize {
		return env, in, invalid("%d bytes, at most %d", len(data), MaxSize)
	}
	if err := decodeStrict(data, &env); err != nil {
		return env, in, invalid("envelope: %v", err)
	}
	if env.PayloadType != PayloadType {
		return env, in, invalid("payload type %.100q, want %q", env.PayloadType, PayloadType)
	}
	if len(env.Signatures) > trust.MaxSignatures {
		return env, in, invalid("%d signatures", len(env.Signatures))
	}
	payload, err := sign.DecodeBase64(env.Payload)
	if err != nil {
		return env, in, invalid("payload: %v", err)
	}
	if err := decodeStrict(payload, &in); err != nil {
		return env, in, invalid("payload: %v", err)
	}
	if err := in.Validate(); err != nil {
		return env, in, err
	}
	return env, in, nil
}

// Verify parses data and checks the signature threshold of pol and the validity window at now.
func Verify(data []byte, pol trust.Policy, now time.Time) (Instruction, error) {
	env, in, err := Parse(data)
	if err != nil {
		return Instruction{}, err
	}
	if _, err := pol.VerifyEnvelope(env, PayloadType, now); err != nil {
		return Instruction{}, fmt.Errorf("rollback instruction: %w", err)
	}
	if now.Before(in.Issued.Add(-5 * time.Minute)) {
		return Instruction{}, invalid("issued in the future (%s)", in.Issued.Format(time.RFC3339))
	}
	if !now.Before(in.Expires) {
		return Instruction{}, fmt.Errorf("rollback instruction: %w at %s", trust.ErrExpired, in.Expires.Format(time.RFC3339))
	}
	return in, nil
}

// Allows reports whether in names the bundle with manifest m.
func (in *Instruction) Allows(m *bundle.Manifest) bool {
	return in.Detector == m.Detector && in.Name == m.Name && in.Version == m.Version && in.ModelSHA256 == m.ModelSHA256
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
