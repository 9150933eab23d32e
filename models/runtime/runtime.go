// Package runtime scores feature vectors with an exported Vigil model in ONNX Runtime (through
// cgo and github.com/yalue/onnxruntime_go). It is the only package of models/ that uses cgo; the
// detector plugins and `vigilctl model eval` use it, the agent core never does.
//
// A Scorer owns one session, created once with one intra-op thread by default, and pre-allocated
// input and output tensors for its maximum batch, so scoring a full batch copies the features into
// the input tensor and runs the session, nothing else.
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
}

// Scorer scores batches of feature vectors. It is safe for concurrent use (calls are serialised).
type Scorer struct {
	mu       sync.Mutex
	sess     *ort.DynamicAdvancedSession
	dim      int
	maxBatch int
	in       *ort.Tensor[float32]
	score    *ort.Tensor[float32]
	contrib  *ort.Tensor[float32]
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
	if s.in, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(maxBatch), int64(dim))); err == nil {
		if s.score, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(maxBatch))); err == nil {
			s.contrib, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(maxBatch), int64(dim)))
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open scorer: allocate tensors: %w", err)
	}
	return s, nil
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
// n·Dim per-feature contributions. When n ≤ MaxBatch the returned slices are the scorer's own
// buffers, valid until the next call; larger inputs are scored in chunks into new slices.
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
	if n <= s.maxBatch {
		return s.run(features, n)
	}
	scores = make([]float32, 0, n)
	contrib = make([]float32, 0, n*s.dim)
	for start := 0; start < n; start += s.maxBatch {
		m := min(s.maxBatch, n-start)
		sc, co, err := s.run(features[start*s.dim:], m)
		if err != nil {
			return nil, nil, err
		}
		scores = append(scores, sc...)
		contrib = append(contrib, co...)
	}
	return scores, contrib, nil
}

// run scores n ≤ maxBatch vectors; the caller holds mu.
func (s *Scorer) run(features []float32, n int) ([]float32, []float32, error) {
	d := s.dim
	inBuf, scoreBuf, contribBuf := s.in.GetData(), s.score.GetData(), s.contrib.GetData()
	copy(inBuf, features[:n*d])
	if n == s.maxBatch {
		if err := s.sess.Run([]ort.Value{s.in}, []ort.Value{s.score, s.contrib}); err != nil {
			return nil, nil, fmt.Errorf("score: run: %w", err)
		}
		return scoreBuf, contribBuf, nil
	}
	// A partial batch: tensors of n rows over the same buffers.
	in, err := ort.NewTensor(ort.NewShape(int64(n), int64(d)), inBuf)
	if err != nil {
		return nil, nil, fmt.Errorf("score: %w", err)
	}
	defer in.Destroy()
	sc, err := ort.NewTensor(ort.NewShape(int64(n)), scoreBuf)
	if err != nil {
		return nil, nil, fmt.Errorf("score: %w", err)
	}
	defer sc.Destroy()
	co, err := ort.NewTensor(ort.NewShape(int64(n), int64(d)), contribBuf)
	if err != nil {
		return nil, nil, fmt.Errorf("score: %w", err)
	}
	defer co.Destroy()
	if err := s.sess.Run([]ort.Value{in}, []ort.Value{sc, co}); err != nil {
		return nil, nil, fmt.Errorf("score: run: %w", err)
	}
	return scoreBuf[:n], contribBuf[:n*d], nil
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
