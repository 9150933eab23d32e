package suppress

import (
	"reflect"
	"testing"
	"time"
)

// FuzzParse: the state file is outside input (a disk, an operator's
// editor): Parse never panics, and what it accepts survives a write and a
// read unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"generation":3,"rules":[{"id":1,"detector":"netflow","dst_ip":"10.0.0.2","dst_port":22,"proto":"tcp"}]}`))
	f.Add([]byte(`{"version":1,"generation":0,"rules":[]}`))
	f.Add([]byte(`{"version":1,"rules":null}`))
	f.Add([]byte(`{"version":1,"rules":[{"detector":"fileactivity","path":"/srv/\u00fc"}],"received":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"version":1,"rules":[{"dst_port":4294967296}]}`))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		if len(s.Rules) > MaxRules || s.Rules == nil {
			t.Fatalf("accepted %d rules (nil: %v)", len(s.Rules), s.Rules == nil)
		}
		enc, err := encode(s, time.Unix(0, 0))
		if err != nil {
			t.Fatalf("encode accepted set: %v", err)
		}
		again, err := Parse(enc)
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip: %+v -> %+v (%v)", s, again, err)
		}
	})
}
