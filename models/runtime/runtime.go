// Package runtime scores feature vectors with an exported Vigil model in ONNX Runtime (through
// cgo and github.com/yalue/onnxruntime_go). It is the only package of models/ that uses cgo; the
// detector plugins and `vigilctl model eval` use it, the agent core never does.
//
// A Scorer owns one session, created once with one intra-op thread by default, and pre-allocated
// input and output tensors for its run size, so scoring a full run copies the features into the
// input tensor, runs the session and copies the results out, nothing else. The run size of a
// bundle's scorer is checked on the machine at load (ConsistentRun): a vector's score must not
// depend on the batch it came in.
package runtime

import (
	"errors"
	"fmt"
	"os"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Graph contract names (see models/export).
const (
	inputName   = "features"
	scoreName   = "score"
	contribName = "contrib"
)

var (
	initOnce sync.Once
	initErr  error
	initLib  string
)

// Init loads the ONNX Runtime shared library (libPath, else $ONNXRUNTIME_LIB) and initialises the
// process-wide environment. Only the first call has an effect; later calls return its result.
func Init(libPath string) error {
	initOnce.Do(func() {
		if libPath == "" {
			libPath = os.Getenv("ONNXRUNTIME_LIB")
		}
		if libPath == "" {
			initErr = errors.New("onnx runtime: no library path (set ONNXRUNTIME_LIB)")
			return
		}
		initLib = libPath
		ort.SetSharedLibraryPath(libPath)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("onnx runtime: initialise %s: %w", libPath, err)
		}
	})
	return initErr
}

// Options tune a Scorer.
type Options struct {
	LibraryPath        string // passed to Init
	IntraOpThreads     int    // default 1
	OptimizedModelPath string // if set, ONNX Runtime writes its optimised graph there (for tests)
	// MaxRun is the most rows per session run (default and at most: maxBatch). Score cuts
	// larger inputs into runs of MaxRun rows; OpenBundle lowers it to the largest run size
	// whose scores match single-row runs on this machine (ConsistentRun).
	MaxRun int
}

// Scorer scores batches of feature vectors. Its calls are serialised, so it may be shared between
// goroutines; but Score returns the scorer's own buffers, valid only until the next Score call
// from any goroutine: a caller that shares a Scorer uses ScoreInto with its own slices.
type Scorer struct {
	mu       sync.Mutex
	sess     *ort.DynamicAdvancedSession
	dim      int
	maxBatch int
	runSize  int
	// Tensors of runSize rows, reused by every full run.
	in      *ort.Tensor[float32]
	score   *ort.Tensor[float32]
	contrib *ort.Tensor[float32]
	// Results of up to maxBatch rows, returned by Score (grown on demand;
	// ScoreInto does not use them).
	scores, contribs []float32
}

// Open loads the model at modelPath for vectors of dimension dim, scoring at most maxBatch vectors
// per session run.
func Open(modelPath string, dim, maxBatch int) (*Scorer, error) {
	return OpenWith(modelPath, nil, dim, maxBatch, Options{})
}

// OpenWith loads a model from modelPath or, if modelData is non-nil, from memory.
func OpenWith(modelPath string, modelData []byte, dim, maxBatch int, opt Options) (*Scorer, error) {
	if dim <= 0 || maxBatch <= 0 {
		return nil, fmt.Errorf("open scorer: invalid dim %d or batch %d", dim, maxBatch)
	}
	if err := Init(opt.LibraryPath); err != nil {
		return nil, err
	}
	if opt.IntraOpThreads <= 0 {
		opt.IntraOpThreads = 1
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("open scorer: session options: %w", err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(opt.IntraOpThreads); err != nil {
		return nil, fmt.Errorf("open scorer: %w", err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("open scorer: %w", err)
	}
	// Small models, small batches: the CPU arena and the memory-pattern
	// planner pre-reserve memory that these runs never need (RSS), and
	// plain allocations cost nothing measurable at these sizes.
	if err := so.SetCpuMemArena(false); err != nil {
		return nil, fmt.Errorf("open scorer: %w", err)
	}
	if err := so.SetMemPattern(false); err != nil {
		return nil, fmt.Errorf("open scorer: %w", err)
	}
	if opt.OptimizedModelPath != "" {
		if err := so.SetOptimizedModelFilePath(opt.OptimizedModelPath); err != nil {
			return nil, fmt.Errorf("open scorer: %w", err)
		}
	}
	var ins, outs []ort.InputOutputInfo
	if modelData != nil {
		ins, outs, err = ort.GetInputOutputInfoWithONNXData(modelData)
	} else {
		ins, outs, err = ort.GetInputOutputInfo(modelPath)
	}
	if err != nil {
		return nil, fmt.Errorf("open scorer: read model: %w", err)
	}
	if err := checkContract(ins, outs, dim); err != nil {
		return nil, fmt.Errorf("open scorer: %w", err)
	}
	names := []string{inputName}
	outNames := []string{scoreName, contribName}
	var sess *ort.DynamicAdvancedSession
	if modelData != nil {
		sess, err = ort.NewDynamicAdvancedSessionWithONNXData(modelData, names, outNames, so)
	} else {
		sess, err = ort.NewDynamicAdvancedSession(modelPath, names, outNames, so)
	}
	if err != nil {
		return nil, fmt.Errorf("open scorer: create session: %w", err)
	}
	s := &Scorer{sess: sess, dim: dim, maxBatch: maxBatch}
	run := maxBatch
	if opt.MaxRun > 0 {
		run = min(opt.MaxRun, maxBatch)
	}
	if err := s.setRunSize(run); err != nil {
		s.Close()
		return nil, fmt.Errorf("open scorer: %w", err)
	}
	return s, nil
}

// setRunSize allocates the run tensors for k rows; the caller holds mu or
// owns s.
func (s *Scorer) setRunSize(k int) error {
	if k < 1 || k > s.maxBatch {
		return fmt.Errorf("run size %d outside [1, %d]", k, s.maxBatch)
	}
	// The new tensors first: if one cannot be allocated, the scorer keeps its
	// current run size and tensors (nil tensors would make the next run panic).
	in, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(k), int64(s.dim)))
	if err != nil {
		return fmt.Errorf("allocate tensors: %w", err)
	}
	score, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(k)))
	if err != nil {
		_ = in.Destroy()
		return fmt.Errorf("allocate tensors: %w", err)
	}
	contrib, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(k), int64(s.dim)))
	if err != nil {
		_ = in.Destroy()
		_ = score.Destroy()
		return fmt.Errorf("allocate tensors: %w", err)
	}
	s.destroyRunTensors()
	s.in, s.score, s.contrib, s.runSize = in, score, contrib, k
	return nil
}

func (s *Scorer) destroyRunTensors() {
	for _, t := range []**ort.Tensor[float32]{&s.in, &s.score, &s.contrib} {
		if *t != nil {
			_ = (*t).Destroy()
			*t = nil
		}
	}
}

// SetRunSize sets the most rows per session run (1 to MaxBatch).
func (s *Scorer) SetRunSize(k int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return errors.New("set run size: scorer is closed")
	}
	return s.setRunSize(k)
}

// RunSize is the most rows scored per session run.
func (s *Scorer) RunSize() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runSize
}

// CheckRuns lowers the run size to the largest one, at most the current,
// at which every probe row scores as it does alone, within tol
// (ConsistentRun), and returns it.
func (s *Scorer) CheckRuns(tol float64) (int, error) {
	k, err := ConsistentRun(s, nil, s.RunSize(), tol)
	if err != nil {
		return 0, err
	}
	if err := s.SetRunSize(k); err != nil {
		return 0, err
	}
	return k, nil
}

func checkContract(ins, outs []ort.InputOutputInfo, dim int) error {
	if len(ins) != 1 || ins[0].Name != inputName || ins[0].DataType != ort.TensorElementDataTypeFloat {
		return fmt.Errorf("model must have one float input %q", inputName)
	}
	if d := ins[0].Dimensions; len(d) != 2 || d[1] != int64(dim) {
		return fmt.Errorf("model input shape %v, want [N, %d]", d, dim)
	}
	found := 0
	for _, o := range outs {
		switch o.Name {
		case scoreName:
			if len(o.Dimensions) != 1 {
				return fmt.Errorf("output %q shape %v, want [N]", scoreName, o.Dimensions)
			}
			found++
		case contribName:
			if len(o.Dimensions) != 2 || o.Dimensions[1] != int64(dim) {
				return fmt.Errorf("output %q shape %v, want [N, %d]", contribName, o.Dimensions, dim)
			}
			found++
		}
	}
	if found != 2 {
		return fmt.Errorf("model must have outputs %q and %q", scoreName, contribName)
	}
	return nil
}

// Dim is the feature dimension.
func (s *Scorer) Dim() int { return s.dim }

// MaxBatch is the largest batch scored in one session run.
func (s *Scorer) MaxBatch() int { return s.maxBatch }

// Score scores n vectors (features holds n·Dim values, row-major) and returns n scores and the
// n·Dim per-feature contributions, in session runs of at most RunSize rows. When n ≤ MaxBatch
// the returned slices are the scorer's own buffers, valid until the next call; larger inputs
// are scored into new slices.
func (s *Scorer) Score(features []float32, n int) (scores, contrib []float32, err error) {
	if n < 0 || len(features) < n*s.dim {
		return nil, nil, fmt.Errorf("score: %d values for %d vectors of %d", len(features), n, s.dim)
	}
	if n == 0 {
		return []float32{}, []float32{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil, nil, errors.New("score: scorer is closed")
	}
	d := s.dim
	if n <= s.maxBatch {
		if len(s.scores) < n {
			s.scores, s.contribs = make([]float32, n), make([]float32, n*d)
		}
		scores, contrib = s.scores[:n], s.contribs[:n*d]
	} else {
		scores, contrib = make([]float32, n), make([]float32, n*d)
	}
	if err := s.scoreRuns(features, n, scores, contrib); err != nil {
		return nil, nil, err
	}
	return scores, contrib, nil
}

// ScoreInto is Score writing into the caller's slices: n scores into
// scores and n·Dim contributions into contrib, with no buffer of the
// scorer's own (a detector's batch buffers are the only copy).
func (s *Scorer) ScoreInto(features []float32, n int, scores, contrib []float32) error {
	if n < 0 || len(features) < n*s.dim || len(scores) < n || len(contrib) < n*s.dim {
		return fmt.Errorf("score: %d values, %d scores and %d contributions for %d vectors of %d",
			len(features), len(scores), len(contrib), n, s.dim)
	}
	if n == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return errors.New("score: scorer is closed")
	}
	return s.scoreRuns(features, n, scores, contrib)
}

// scoreRuns scores n vectors in runs of runSize; the caller holds mu.
func (s *Scorer) scoreRuns(features []float32, n int, scores, contrib []float32) error {
	d := s.dim
	for off := 0; off < n; off += s.runSize {
		k := min(s.runSize, n-off)
		if err := s.run(features[off*d:(off+k)*d], k, scores[off:off+k], contrib[off*d:(off+k)*d]); err != nil {
			return err
		}
	}
	return nil
}

// run scores n ≤ runSize vectors into scores and contrib; the caller holds mu.
func (s *Scorer) run(features []float32, n int, scores, contrib []float32) error {
	d := s.dim
	inBuf, scoreBuf, contribBuf := s.in.GetData(), s.score.GetData(), s.contrib.GetData()
	copy(inBuf, features[:n*d])
	if n == s.runSize {
		if err := s.sess.Run([]ort.Value{s.in}, []ort.Value{s.score, s.contrib}); err != nil {
			return fmt.Errorf("score: run: %w", err)
		}
	} else if err := s.runPartial(inBuf, scoreBuf, contribBuf, n); err != nil {
		return err
	}
	copy(scores, scoreBuf[:n])
	copy(contrib, contribBuf[:n*d])
	return nil
}

// runPartial runs n < runSize rows on tensors of n rows over the run buffers.
func (s *Scorer) runPartial(inBuf, scoreBuf, contribBuf []float32, n int) error {
	d := s.dim
	in, err := ort.NewTensor(ort.NewShape(int64(n), int64(d)), inBuf[:n*d])
	if err != nil {
		return fmt.Errorf("score: %w", err)
	}
	defer in.Destroy()
	sc, err := ort.NewTensor(ort.NewShape(int64(n)), scoreBuf[:n])
	if err != nil {
		return fmt.Errorf("score: %w", err)
	}
	defer sc.Destroy()
	co, err := ort.NewTensor(ort.NewShape(int64(n), int64(d)), contribBuf[:n*d])
	if err != nil {
		return fmt.Errorf("score: %w", err)
	}
	defer co.Destroy()
	if err := s.sess.Run([]ort.Value{in}, []ort.Value{sc, co}); err != nil {
		return fmt.Errorf("score: run: %w", err)
	}
	return nil
}

// Close releases the session and tensors. It is safe to call more than once.
func (s *Scorer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.sess != nil {
		errs = append(errs, s.sess.Destroy())
		s.sess = nil
	}
	for _, t := range []*ort.Tensor[float32]{s.in, s.score, s.contrib} {
		if t != nil {
			errs = append(errs, t.Destroy())
		}
	}
	s.in, s.score, s.contrib = nil, nil, nil
	return errors.Join(errs...)
}
