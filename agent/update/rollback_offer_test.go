package update

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRollbackOffer: a rollback offered by the server carries the signed instruction
// (ModelOffer.rollback_instruction); the agent at version 2 verifies it exactly as the air-gapped
// `update --rollback` does, and activates version 1 only with a valid one. Every other case is
// rejected with a reason naming the problem, and version 2 stays active.
func TestRollbackOffer(t *testing.T) {
	e := newEnv(t)
	ff := &fakeFetcher{files: map[string][]byte{}}
	u := e.updater(nil)
	u.cfg.Fetcher = ff
	v1 := e.bundle("nf", 1, nil, "model-1")
	install(t, u, v1)
	install(t, u, e.bundle("nf", 2, nil, "model-2"))
	b1, err := bundle.Read(v1, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	valid, err := rollback.Sign(rollback.For(&b1.Manifest, e.now, time.Hour, "v2 too noisy"), e.a)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := rollback.Sign(rollback.For(&b1.Manifest, e.now, time.Hour, ""))
	if err != nil {
		t.Fatal(err)
	}
	untrusted, _ := rollback.Sign(rollback.For(&b1.Manifest, e.now, time.Hour, ""), signtest.NewSigner(t, sign.AlgEd25519))
	// Forged: a validly signed instruction for version 1 whose payload is edited to say
	// something else (here: a longer validity) after signing.
	forged := forgeInstruction(t, valid, func(in *rollback.Instruction) { in.Expires = in.Expires.Add(24 * time.Hour) })
	m3 := b1.Manifest
	m3.Version = 3
	otherBundle, _ := rollback.Sign(rollback.For(&m3, e.now, time.Hour, ""), e.a)

	o, data := e.offer(v1, "")
	ff.files[o.Model.Digest] = data
	cases := []struct {
		name     string
		rollback bool
		instr    []byte
		want     string
	}{
		{"no rollback at all", false, nil, "not greater than the active version 2 (a downgrade needs a signed rollback instruction)"},
		{"missing instruction", true, nil, "rollback offer without a signed rollback instruction"},
		{"unsigned instruction", true, unsigned, "rollback instruction: signature check failed"},
		{"untrusted signer", true, untrusted, "rollback instruction: signature check failed"},
		{"forged payload", true, forged, "rollback instruction: signature check failed"},
		{"names another bundle", true, otherBundle, "rollback instruction names netflow nf@3, not this bundle"},
		{"garbage", true, []byte("{not json"), "invalid rollback instruction"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			oc := proto.Clone(o).(*wirev1.ModelOffer)
			oc.RolloutId, oc.Rollback, oc.RollbackInstruction = "rb-"+strings.ReplaceAll(c.name, " ", "-"), c.rollback, c.instr
			if c.rollback && c.instr == nil {
				u.HandleOffer(oc) // refused before it is queued
			} else {
				u.processOffer(context.Background(), oc)
			}
			st, reason := e.lastState(oc.RolloutId)
			if st != StateRejected || !strings.Contains(reason, c.want) {
				t.Fatalf("state %s, reason %q; want rejected with %q", st, reason, c.want)
			}
			if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 2 {
				t.Fatalf("active version %d after a refused rollback", a.Manifest.Version)
			}
		})
	}

	oc := proto.Clone(o).(*wirev1.ModelOffer)
	oc.RolloutId, oc.Rollback, oc.RollbackInstruction = "rb-valid", true, valid
	u.processOffer(context.Background(), oc)
	if st, reason := e.lastState("rb-valid"); st != StateActive {
		t.Fatalf("valid rollback: %s %s", st, reason)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 1 {
		t.Fatalf("active version %d after the rollback, want 1", a.Manifest.Version)
	}
	if err := CheckOffer(oc, u.cfg.MaxBundle); err != nil {
		t.Fatalf("valid rollback offer refused by CheckOffer: %v", err)
	}
	oc.RollbackInstruction = make([]byte, rollback.MaxSize+1)
	if err := CheckOffer(oc, u.cfg.MaxBundle); err == nil {
		t.Fatal("oversized rollback instruction accepted")
	}
}

// forgeInstruction rewrites the payload of a signed instruction, keeping its signatures.
func forgeInstruction(t *testing.T, signed []byte, edit func(*rollback.Instruction)) []byte {
	t.Helper()
	var env bundle.Envelope
	if err := json.Unmarshal(signed, &env); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var in rollback.Instruction
	if err := json.Unmarshal(payload, &in); err != nil {
		t.Fatal(err)
	}
	edit(&in)
	payload, _ = json.Marshal(in)
	env.Payload = base64.StdEncoding.EncodeToString(payload)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
