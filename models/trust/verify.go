package trust

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
)

type trustedKey struct {
	id       string
	verifier signature.Verifier
	expires  *time.Time
}

func (k *trustedKey) expiredAt(now time.Time) bool {
	return k.expires != nil && !now.Before(*k.expires)
}

func (k *trustedKey) verify(sig, pae []byte) bool {
	return k.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(pae)) == nil
}

// Result says what each signature of an envelope counted for.
type Result struct {
	VerifiedBy []string // distinct trusted, unexpired key ids with a valid signature, sorted
	Expired    []string // trusted key ids with a valid signature but expired at the time of the check
	Invalid    []string // trusted key ids whose signature did not verify (or did not decode)
	Unknown    []string // key ids of signatures from keys not in the policy ("" when the signature had none)
	Threshold  int      // the policy's threshold
	Keys       int      // number of keys in the policy
}

// ThresholdError is returned when fewer than Threshold trusted keys signed; it wraps ErrThreshold.
type ThresholdError struct{ Result Result }

func (e *ThresholdError) Error() string {
	r := e.Result
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d required (policy has %d keys)", ErrThreshold.Error(), len(r.VerifiedBy), r.Threshold, r.Keys)
	var ign []string
	if n := len(r.Unknown); n > 0 {
		ign = append(ign, fmt.Sprintf("%d from unknown keys", n))
	}
	if n := len(r.Invalid); n > 0 {
		ign = append(ign, fmt.Sprintf("%d invalid (keys %s)", n, shortIDs(r.Invalid)))
	}
	if n := len(r.Expired); n > 0 {
		ign = append(ign, fmt.Sprintf("%d by expired keys (%s)", n, shortIDs(r.Expired)))
	}
	if len(ign) > 0 {
		fmt.Fprintf(&b, "; ignored signatures: %s", strings.Join(ign, ", "))
	}
	return b.String()
}

func (e *ThresholdError) Unwrap() error { return ErrThreshold }

func shortIDs(ids []string) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		if len(id) > 12 {
			id = id[:12]
		}
		s[i] = id
	}
	return strings.Join(s, ",")
}

// reportID bounds an untrusted key id before it goes into a Result or a message.
func reportID(id string) string {
	if len(id) > 64 {
		id = id[:64]
	}
	q := strconv.Quote(id)
	return q[1 : len(q)-1]
}

// Verify checks the signatures of a bundle envelope (payload type bundle.PayloadType) and returns
// the ids of the distinct trusted, unexpired keys whose signature over the PAE is valid. Fewer than
// the threshold is a *ThresholdError. It checks signatures only: the statement, the digest and the
// manifest are models/bundle.Read's job, which is why agents call VerifyBundle.
func (p Policy) Verify(env bundle.Envelope, now time.Time) ([]string, error) {
	r, err := p.VerifyEnvelope(env, bundle.PayloadType, now)
	if err != nil {
		return nil, err
	}
	return r.VerifiedBy, nil
}

// VerifyEnvelope checks that env has payload type payloadType and signatures from at least the
// threshold of distinct trusted, unexpired keys over PAE(payloadType, payload). Signatures are
// matched to keys by key id; a signature without a key id is tried against every trusted key not
// yet counted. A key counts once however many signatures it has. The Result is filled even when
// the error is a *ThresholdError.
func (p Policy) VerifyEnvelope(env bundle.Envelope, payloadType string, now time.Time) (Result, error) {
	res := Result{Threshold: p.Threshold, Keys: len(p.Keys)}
	keys, err := p.compile()
	if err != nil {
		return res, fmt.Errorf("verify signatures: %w", err)
	}
	if env.PayloadType != payloadType {
		return res, fmt.Errorf("verify signatures: %w: %.100q, want %q", ErrPayloadType, env.PayloadType, payloadType)
	}
	if len(env.Signatures) > MaxSignatures {
		return res, fmt.Errorf("verify signatures: %d signatures, at most %d", len(env.Signatures), MaxSignatures)
	}
	payload, err := sign.DecodeBase64(env.Payload)
	if err != nil {
		return res, fmt.Errorf("verify signatures: payload: %w", err)
	}
	pae := bundle.PAE(env.PayloadType, payload)

	counted := map[string]bool{} // key ids already counted (valid, expired or not)
	invalid := map[string]bool{}
	for _, s := range env.Signatures {
		raw, decErr := sign.DecodeBase64(s.Sig)
		if s.KeyID == "" {
			var hit *trustedKey
			if decErr == nil {
				for _, k := range sortedKeys(keys) {
					if !counted[k.id] && k.verify(raw, pae) {
						hit = k
						break
					}
				}
			}
			if hit == nil {
				res.Unknown = append(res.Unknown, "")
				continue
			}
			count(&res, counted, hit, now)
			continue
		}
		k, ok := keys[s.KeyID]
		if !ok {
			res.Unknown = append(res.Unknown, reportID(s.KeyID))
			continue
		}
		if counted[k.id] {
			continue // same key twice counts once
		}
		if decErr != nil || !k.verify(raw, pae) {
			if !invalid[k.id] {
				invalid[k.id] = true
				res.Invalid = append(res.Invalid, k.id)
			}
			continue
		}
		count(&res, counted, k, now)
	}
	// A key with one bad and one good signature is not "invalid".
	res.Invalid = filter(res.Invalid, func(id string) bool { return !counted[id] })
	sort.Strings(res.VerifiedBy)
	sort.Strings(res.Expired)
	sort.Strings(res.Invalid)
	if len(res.VerifiedBy) < p.Threshold {
		return res, &ThresholdError{Result: res}
	}
	return res, nil
}

func count(res *Result, counted map[string]bool, k *trustedKey, now time.Time) {
	counted[k.id] = true
	if k.expiredAt(now) {
		res.Expired = append(res.Expired, k.id)
		return
	}
	res.VerifiedBy = append(res.VerifiedBy, k.id)
}

func sortedKeys(m map[string]*trustedKey) []*trustedKey {
	out := make([]*trustedKey, 0, len(m))
	for _, k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func filter(ids []string, keep func(string) bool) []string {
	out := ids[:0]
	for _, id := range ids {
		if keep(id) {
			out = append(out, id)
		}
	}
	return out
}

// VerifyBundle is the full check of a bundle file for agents and the server: models/bundle.Read
// (strict tar and JSON parsing, bounded sizes, payload type, statement, manifest validation,
// model digest equal to the statement's subject), then the policy's signature threshold over the
// envelope, then the manifest's expiry (now must be before Expires). It returns the bundle and the
// ids of the keys that counted.
//
// It does NOT check that the version is greater than the active model's, nor the feature set,
// dimension or minimum agent version against the running plugin/agent: those belong to the
// updater, which calls VerifyBundle first.
func VerifyBundle(path string, pol Policy, now time.Time) (*bundle.Bundle, []string, error) {
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return nil, nil, fmt.Errorf("verify bundle: %w", err)
	}
	ids, err := verifyRead(b, pol, now)
	if err != nil {
		return nil, nil, fmt.Errorf("verify bundle %s: %w", path, err)
	}
	return b, ids, nil
}

// VerifyBundleReader is VerifyBundle for a stream (for example an upload), read with
// models/bundle.ReadFrom and lim.
func VerifyBundleReader(r io.Reader, lim bundle.Limits, pol Policy, now time.Time) (*bundle.Bundle, []string, error) {
	b, err := bundle.ReadFrom(r, lim)
	if err != nil {
		return nil, nil, fmt.Errorf("verify bundle: %w", err)
	}
	ids, err := verifyRead(b, pol, now)
	if err != nil {
		return nil, nil, fmt.Errorf("verify bundle: %w", err)
	}
	return b, ids, nil
}

func verifyRead(b *bundle.Bundle, pol Policy, now time.Time) ([]string, error) {
	ids, err := pol.Verify(b.Envelope, now)
	if err != nil {
		return nil, err
	}
	if !now.Before(b.Manifest.Expires) {
		return nil, fmt.Errorf("%w: %s version %d expired at %s", ErrExpired, b.Manifest.Name, b.Manifest.Version,
			b.Manifest.Expires.UTC().Format(time.RFC3339))
	}
	return ids, nil
}

// NewUpdate returns the unsigned DSSE envelope that carries next as a policy update. Sign it with
// sign.SignEnvelope (threshold of the current keys and of next's keys), then json.Marshal it.
func NewUpdate(next Policy) (*bundle.Envelope, error) {
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("new trust policy update: %w", err)
	}
	b, err := next.Marshal()
	if err != nil {
		return nil, err
	}
	return &bundle.Envelope{
		PayloadType: PolicyPayloadType,
		Payload:     base64.StdEncoding.EncodeToString(b),
		Signatures:  []bundle.Signature{},
	}, nil
}

// ApplyUpdate checks a signed policy update (DSSE envelope JSON, payload type PolicyPayloadType)
// and returns the new policy. Required: the envelope meets the threshold of current (its keys,
// unexpired at now), the payload is a valid policy with a version greater than current's, and the
// envelope also meets the new policy's own threshold. The caller persists the result (WriteFile).
func ApplyUpdate(current Policy, envelopeJSON []byte, now time.Time) (Policy, error) {
	if len(envelopeJSON) > MaxPolicySize {
		return Policy{}, fmt.Errorf("trust policy update: %d bytes, at most %d", len(envelopeJSON), MaxPolicySize)
	}
	var env bundle.Envelope
	if err := decodeStrict(envelopeJSON, &env); err != nil {
		return Policy{}, fmt.Errorf("trust policy update: decode envelope: %w", err)
	}
	if env.Signatures == nil {
		return Policy{}, errors.New("trust policy update: envelope has no signatures")
	}
	if _, err := current.VerifyEnvelope(env, PolicyPayloadType, now); err != nil {
		return Policy{}, fmt.Errorf("trust policy update: current policy: %w", err)
	}
	payload, err := sign.DecodeBase64(env.Payload)
	if err != nil {
		return Policy{}, fmt.Errorf("trust policy update: %w", err)
	}
	next, err := ParsePolicy(payload)
	if err != nil {
		return Policy{}, fmt.Errorf("trust policy update: %w", err)
	}
	if next.Version <= current.Version {
		return Policy{}, fmt.Errorf("trust policy update: %w: version %d, current %d", ErrStaleUpdate, next.Version, current.Version)
	}
	if _, err := next.VerifyEnvelope(env, PolicyPayloadType, now); err != nil {
		return Policy{}, fmt.Errorf("trust policy update: the new policy's own keys must also sign it: %w", err)
	}
	return next, nil
}
