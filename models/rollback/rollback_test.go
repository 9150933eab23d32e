package rollback

import (
	"errors"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/models/trust"
)

func TestSignVerify(t *testing.T) {
	now := time.Now()
	a := signtest.NewSigner(t, sign.AlgEd25519)
	b := signtest.NewSigner(t, sign.AlgECDSAP256)
	pol := signtest.Policy(t, 2, a, b)
	m := signtest.Manifest("nf", 3, now)
	m.ModelSHA256 = bundle.SHA256Hex([]byte("model"))
	in := For(&m, now, time.Hour, "v4 is noisy")
	both, err := Sign(in, a, b)
	if err != nil {
		t.Fatal(err)
	}
	one, err := Sign(in, a)
	if err != nil {
		t.Fatal(err)
	}
	other := signtest.NewSigner(t, sign.AlgEd25519)
	untrusted, err := Sign(in, other, a)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
		now  time.Time
		want error
	}{
		{"ok", both, now, nil},
		{"below threshold", one, now, trust.ErrThreshold},
		{"untrusted key", untrusted, now, trust.ErrThreshold},
		{"expired", both, now.Add(2 * time.Hour), trust.ErrExpired},
		{"future", both, now.Add(-time.Hour), ErrInvalid},
		{"garbage", []byte("{"), now, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Verify(tt.data, pol, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !got.Allows(&m) {
					t.Fatal("instruction does not allow its own bundle")
				}
				m2 := m
				m2.Version = 2
				if got.Allows(&m2) {
					t.Fatal("instruction allows another version")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	m := signtest.Manifest("nf", 3, now)
	m.ModelSHA256 = bundle.SHA256Hex([]byte("model"))
	s := signtest.NewSigner(f, sign.AlgEd25519)
	good, err := Sign(For(&m, now, time.Hour, ""), s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"payloadType":"application/vnd.vigil.model-rollback+json","payload":"e30=","signatures":[]}`))
	f.Add([]byte("null"))
	pol := signtest.Policy(f, 1, s)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, in, err := Parse(data)
		if err == nil {
			if err := in.Validate(); err != nil {
				t.Fatalf("Parse accepted an invalid instruction: %v", err)
			}
		}
		_, _ = Verify(data, pol, now)
	})
}
