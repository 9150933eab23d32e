package main

import (
	"io"
	"strings"
	"testing"
)

// TestParseFlagsRecipe: -kind, -norm and -layout were checked only after
// every session was recorded (the workloads run for minutes) and the model
// trained: a typo cost the whole run. They are checked with the flags.
func TestParseFlagsRecipe(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-kind", "rnn"}, `-kind "rnn"`},
		{[]string{"-norm", "l2"}, `-norm "l2"`},
		{[]string{"-layout", "splitinput"}, `-layout: unknown int8 layout "splitinput"`},
	} {
		if _, err := parseFlags(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.args, err, c.want)
		}
	}
	for _, args := range [][]string{{"-kind", "single", "-norm", "zscore"}, {"-layout", "fit-rounding"}, {}} {
		if _, err := parseFlags(args, io.Discard); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}
