// Package trust holds the trust policy for model-signing keys and verifies signatures against it.
//
// A Policy (trust.json, shipped by the installer) lists trusted release public keys by key id
// (models/sign.KeyID: hex SHA-256 of the DER SubjectPublicKeyInfo), each with an optional expiry,
// and a threshold K: a DSSE envelope is accepted when at least K DISTINCT trusted, unexpired keys
// have a valid signature over its PAE. Signatures from unknown keys, invalid signatures and
// signatures by expired keys are ignored (reported in Result), never fatal by themselves.
//
// The policy itself changes only through ApplyUpdate: a DSSE envelope of type PolicyPayloadType
// whose payload is the next policy, with a strictly greater version, signed by the threshold of the
// CURRENT policy and also by the threshold of the NEXT policy (as TUF does for root rotation: the
// new keys prove they can sign, so an update cannot lock the fleet out). Rotation is therefore:
// add the new key (signed by the old), sign with both, remove the old (signed by both).
//
// VerifyBundle is the full check agents and the server run on a .vgb file: strict parsing and
// digest checks (models/bundle.Read), signature threshold, manifest not expired. Whether the
// version is newer than the active one, and whether the feature set and dimension fit the plugin,
// are the updater's checks, not this package's.
package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/sign"
)

// Names and bounds.
const (
	FileName          = "trust.json"                              // conventional file name of a policy
	PolicyPayloadType = "application/vnd.vigil.trust-policy+json" // DSSE payload type of a policy update
	MaxPolicySize     = 1 << 20                                   // bytes of policy JSON or update envelope
	MaxKeys           = 64                                        // keys in one policy
	MaxSignatures     = 64                                        // signatures in one envelope
	maxComment        = 256
)

// Errors callers (the updater, the server) may test with errors.Is to report a reason.
var (
	ErrInvalidPolicy = errors.New("invalid trust policy")
	ErrThreshold     = errors.New("not enough trusted signatures")
	ErrPayloadType   = errors.New("unexpected payload type")
	ErrExpired       = errors.New("bundle expired")
	ErrStaleUpdate   = errors.New("trust policy update is not newer than the current policy")
)

// Key is one trusted public key.
type Key struct {
	ID           string     `json:"id"`                // sign.KeyID of the public key
	PublicKeyPEM string     `json:"public_key"`        // PEM "PUBLIC KEY", ECDSA P-256 or Ed25519
	Expires      *time.Time `json:"expires,omitempty"` // signatures by this key do not count from this instant on
	Comment      string     `json:"comment,omitempty"` // free text (who holds it), at most 256 bytes
}

// Policy is the set of trusted model-signing keys and the number of them that must sign.
type Policy struct {
	// Version increases with every update; ApplyUpdate refuses an update whose version is not
	// greater than the current one (an old, validly signed update cannot be replayed).
	Version   uint64 `json:"version"`
	Threshold int    `json:"threshold"` // 0 in a file means the default, 1
	Keys      []Key  `json:"keys"`
}

var keyIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPolicy, fmt.Sprintf(format, args...))
}

// NewPolicy builds a version-1 policy trusting the given PEM public keys with threshold k (0 means
// 1). It is what `vigilctl model verify --pub ... --threshold K` and the installer use.
func NewPolicy(k int, pubPEMs ...[]byte) (Policy, error) {
	p := Policy{Version: 1, Threshold: k}
	if p.Threshold == 0 {
		p.Threshold = 1
	}
	for i, pemBytes := range pubPEMs {
		_, id, err := sign.ParsePublicKeyPEM(pemBytes)
		if err != nil {
			return Policy{}, invalid("key %d: %v", i, err)
		}
		p.Keys = append(p.Keys, Key{ID: id, PublicKeyPEM: string(pemBytes)})
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Validate checks 1 <= threshold <= number of keys, at most MaxKeys keys, unique ids, and that
// every key parses (ECDSA P-256 or Ed25519) and its id is the key id of its public key.
func (p Policy) Validate() error {
	_, err := p.compile()
	return err
}

// compile validates the policy and parses its keys.
func (p Policy) compile() (map[string]*trustedKey, error) {
	if len(p.Keys) == 0 {
		return nil, invalid("no keys")
	}
	if len(p.Keys) > MaxKeys {
		return nil, invalid("%d keys, at most %d", len(p.Keys), MaxKeys)
	}
	if p.Threshold < 1 || p.Threshold > len(p.Keys) {
		return nil, invalid("threshold %d must be between 1 and the number of keys (%d)", p.Threshold, len(p.Keys))
	}
	keys := make(map[string]*trustedKey, len(p.Keys))
	for i, k := range p.Keys {
		if !keyIDRE.MatchString(k.ID) {
			return nil, invalid("key %d: id %.80q is not 64 lowercase hex digits", i, k.ID)
		}
		if _, dup := keys[k.ID]; dup {
			return nil, invalid("key %d: duplicate id %s", i, k.ID)
		}
		if len(k.Comment) > maxComment {
			return nil, invalid("key %s: comment longer than %d bytes", k.ID, maxComment)
		}
		pub, id, err := sign.ParsePublicKeyPEM([]byte(k.PublicKeyPEM))
		if err != nil {
			return nil, invalid("key %s: %v", k.ID, err)
		}
		if id != k.ID {
			return nil, invalid("key %d: id %s does not match its public key (whose id is %s)", i, k.ID, id)
		}
		v, err := sign.NewVerifier(pub)
		if err != nil {
			return nil, invalid("key %s: %v", k.ID, err)
		}
		keys[k.ID] = &trustedKey{id: k.ID, verifier: v, expires: k.Expires}
	}
	return keys, nil
}

// ParsePolicy decodes a policy from JSON strictly (unknown fields and trailing data are errors),
// applies the default threshold (1) when it is 0 or absent, and validates it.
func ParsePolicy(data []byte) (Policy, error) {
	if len(data) > MaxPolicySize {
		return Policy{}, invalid("%d bytes, at most %d", len(data), MaxPolicySize)
	}
	var p Policy
	if err := decodeStrict(data, &p); err != nil {
		return Policy{}, invalid("decode: %v", err)
	}
	if p.Threshold == 0 {
		p.Threshold = 1
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Load reads and validates a policy file (see ParsePolicy). Only a regular
// file is read (a symbolic link to one is followed: seeds and admins' files
// may be links), at most MaxPolicySize bytes: a named pipe, in the agent's
// state directory for one, would otherwise hold the caller for good.
func Load(path string) (Policy, error) {
	data, err := fsutil.ReadRegular(path, MaxPolicySize)
	if errors.Is(err, fsutil.ErrTooLarge) {
		return Policy{}, fmt.Errorf("load trust policy: %w: %w", ErrInvalidPolicy, err)
	}
	if err != nil {
		return Policy{}, fmt.Errorf("load trust policy: %w", err)
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return Policy{}, fmt.Errorf("load trust policy %s: %w", path, err)
	}
	return p, nil
}

// Marshal encodes the policy as indented JSON (the trust.json format).
func (p Policy) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode trust policy: %w", err)
	}
	return append(b, '\n'), nil
}

// WriteFile validates the policy and writes it to path atomically (temporary file, fsync, rename,
// directory fsync) with mode 0644.
func (p Policy) WriteFile(path string) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("write trust policy: %w", err)
	}
	b, err := p.Marshal()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write trust policy: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write trust policy: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write trust policy: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write trust policy: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write trust policy: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write trust policy: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write trust policy: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write trust policy: sync dir: %w", err)
	}
	return nil
}

// KeyIDs lists the policy's key ids in order.
func (p Policy) KeyIDs() []string {
	ids := make([]string, len(p.Keys))
	for i, k := range p.Keys {
		ids[i] = k.ID
	}
	return ids
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
