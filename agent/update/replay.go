package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// Replay protection of signed rollback instructions.
//
// A rollback instruction is valid for up to rollback.MaxTTL (30 days), and its signature and
// validity window say nothing about what the agent did meanwhile. Without more, an instruction
// could be replayed within its window: Monday the CERT rolls nethost back from v4 to v3 with
// instruction A, Tuesday it rolls out v5, Wednesday whoever can feed the agent old signed material
// (a compromised mirror, `vigil-agent update --bundle v3.vgb --rollback A.json`) replays A and the
// agent goes back to v3, a downgrade nobody approved after v5. So the agent keeps, per detector and
// feature-set name (sdk.FeatureFamily: the plugin runs one model for all its versions), when it
// last activated a model by an ordinary update and the issue time of the last instruction it
// applied, and accepts an instruction only if it was issued after both (checkRollbackReplay).

// rollbackSkew is the clock skew allowed between the CERT that issues rollback instructions and a
// sensor: an instruction issued (by the CERT's clock) up to rollbackSkew before the agent (by its
// own clock) activated the running model is taken as issued after it, so that an agent whose
// clock is ahead still accepts the instruction written right after an update. It also bounds the
// replay window left: an instruction issued less than rollbackSkew before an update may be replayed
// after it. rollback.Verify allows 5 minutes the other way (an instruction issued in the future).
const rollbackSkew = 15 * time.Minute

// maxReplayState bounds a replay state file (a few dozen bytes when well-formed).
const maxReplayState = 4 << 10

// ErrStaleRollback is wrapped by the Rejection of a rollback instruction that is older than what
// the agent did since it was issued (checkRollbackReplay): a replay, or an instruction superseded
// by a later one. Only a new instruction from the release engineers allows the downgrade.
var ErrStaleRollback = errors.New("stale rollback instruction")

// replayState is what the agent remembers of the activations of one feature-set name's models
// (<state>/models/<detector>/replay-<name>). The zero value, also that of a file written before
// session 27 or of none, sets no constraint.
type replayState struct {
	// ActivatedAt is the agent's clock when it last activated a model of the feature-set name
	// other than by a rollback instruction (an ordinary update). Models that failed their health
	// check, the earlier models loaded back in their place and shadow models were not activated
	// and do not count.
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	// RollbackIssued is the Issued time of the last rollback instruction applied to the
	// feature-set name: it only ever grows.
	RollbackIssued time.Time `json:"rollback_issued,omitzero"`
}

func replayFile(dir, featureSet string) string {
	return filepath.Join(dir, replayPrefix+sdk.FeatureFamily(featureSet))
}

// readReplay reads the replay state of featureSet's name; the zero state when there is none. Fields
// it does not know are ignored (a later agent's), missing ones are zero (an earlier agent's). Only a
// regular file is read, never through a symbolic link (writeReplay writes it by rename), at most
// maxReplayState bytes: a named pipe there would otherwise hold every install for good.
func readReplay(dir, featureSet string) (replayState, error) {
	name := replayFile(dir, featureSet)
	b, err := fsutil.ReadRegularNoFollow(name, maxReplayState)
	if errors.Is(err, fs.ErrNotExist) {
		return replayState{}, nil
	}
	if err != nil {
		return replayState{}, fmt.Errorf("read rollback replay state: %w", err)
	}
	var st replayState
	if err := json.Unmarshal(b, &st); err != nil {
		return replayState{}, fmt.Errorf("read rollback replay state %s: malformed: %w", name, err)
	}
	return st, nil
}

// writeReplay replaces the replay state of featureSet's name atomically (temporary file, fsync,
// rename), like the version floor.
func writeReplay(dir, featureSet string, st replayState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode rollback replay state: %w", err)
	}
	if err := writeFileAtomic(replayFile(dir, featureSet), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write rollback replay state: %w", err)
	}
	return nil
}

// checkRollbackReplay refuses (an error wrapping ErrStaleRollback) an instruction that st shows to
// be stale:
//
//	in.Issued <  st.ActivatedAt - rollbackSkew   issued before the running model was activated
//	in.Issued <= st.RollbackIssued               the instruction last applied, or an older one
//
// A zero time in st sets no constraint.
func checkRollbackReplay(in *rollback.Instruction, st replayState, family string) error {
	issued := in.Issued.UTC().Format(time.RFC3339)
	const fix = "ask the release engineers to issue a new rollback instruction"
	switch {
	case !st.ActivatedAt.IsZero() && in.Issued.Before(st.ActivatedAt.Add(-rollbackSkew)):
		return fmt.Errorf("%w: the instruction for %s@%d was issued at %s, which predates the activation of the running %s model on this agent at %s (by more than the %s allowed for clock skew): it was not issued to roll back from that model (a replay?); %s",
			ErrStaleRollback, in.Name, in.Version, issued, family, st.ActivatedAt.UTC().Format(time.RFC3339), rollbackSkew, fix)
	case !st.RollbackIssued.IsZero() && !in.Issued.After(st.RollbackIssued):
		return fmt.Errorf("%w: the instruction for %s@%d was issued at %s, which is not newer than the last rollback instruction applied to the %s models on this agent (issued at %s): it was already used or is superseded (a replay?); %s",
			ErrStaleRollback, in.Name, in.Version, issued, family, st.RollbackIssued.UTC().Format(time.RFC3339), fix)
	}
	return nil
}

// activated is st after a model was activated at now, by the rollback instruction in (nil: an
// ordinary update).
func (st replayState) activated(now time.Time, in *rollback.Instruction) replayState {
	if in == nil {
		st.ActivatedAt = now.UTC()
	} else if in.Issued.After(st.RollbackIssued) {
		st.RollbackIssued = in.Issued.UTC()
	}
	return st
}
