// Package onnx holds Vigil's minimal ONNX protobuf types (generated from onnx.proto, field numbers as
// in the ONNX specification) and a small builder for the inference graphs the model exporter writes.
//
// The builder names every intermediate value itself, so callers chain operators by the names it
// returns:
//
//	b := onnx.NewBuilder("ae")
//	x := b.Input("features", onnx.Float, onnx.Param("N"), onnx.Fixed(115))
//	h := b.Op("Sigmoid", b.Op("Add", b.Op("MatMul", x, b.Float32("w1", w1, 115, 86)), b.Float32("b1", b1, 86)))
//	...
//	model := b.Model("vigil", onnx.Opset("", 17))
package onnx

//go:generate protoc --go_out=. --go_opt=paths=source_relative onnx.proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"google.golang.org/protobuf/proto"
)

// Element types used by Vigil graphs.
const (
	Float = TensorProto_FLOAT
	Uint8 = TensorProto_UINT8
	Int8  = TensorProto_INT8
	Int32 = TensorProto_INT32
	Int64 = TensorProto_INT64
)

// IRVersion is the ONNX IR version Vigil writes (IR 8 goes with opset 17).
const IRVersion = int64(Version_IR_VERSION_2021_7_30)

// DomainMicrosoft is ONNX Runtime's contrib operator domain.
const DomainMicrosoft = "com.microsoft"

// Dim is one dimension of a graph input or output: a fixed size or a symbolic name.
type Dim struct {
	Value int64
	Param string
}

// Fixed returns a fixed dimension.
func Fixed(n int64) Dim { return Dim{Value: n} }

// Param returns a symbolic (dynamic) dimension such as the batch size "N".
func Param(name string) Dim { return Dim{Param: name} }

// Opset returns an operator-set import.
func Opset(domain string, version int64) *OperatorSetIdProto {
	return &OperatorSetIdProto{Domain: domain, Version: version}
}

// Builder accumulates a GraphProto.
type Builder struct {
	g     *GraphProto
	seq   int
	names map[string]bool
	// aliases are Output's pending renames (src, name).
	aliases [][2]string
}

// NewBuilder starts an empty graph.
func NewBuilder(name string) *Builder {
	return &Builder{g: &GraphProto{Name: name}, names: map[string]bool{}}
}

func (b *Builder) unique(prefix string) string {
	for {
		b.seq++
		n := fmt.Sprintf("%s_%d", prefix, b.seq)
		if !b.names[n] {
			b.names[n] = true
			return n
		}
	}
}

func (b *Builder) claim(name string) string {
	if name == "" || b.names[name] {
		return b.unique(name)
	}
	b.names[name] = true
	return name
}

func valueInfo(name string, elem TensorProto_DataType, dims []Dim) *ValueInfoProto {
	shape := &TensorShapeProto{}
	for _, d := range dims {
		if d.Param != "" {
			shape.Dim = append(shape.Dim, &TensorShapeProto_Dimension{Value: &TensorShapeProto_Dimension_DimParam{DimParam: d.Param}})
		} else {
			shape.Dim = append(shape.Dim, &TensorShapeProto_Dimension{Value: &TensorShapeProto_Dimension_DimValue{DimValue: d.Value}})
		}
	}
	return &ValueInfoProto{Name: name, Type: &TypeProto{Value: &TypeProto_TensorType{TensorType: &TypeProto_Tensor{ElemType: int32(elem), Shape: shape}}}}
}

// Input declares a graph input and returns its name.
func (b *Builder) Input(name string, elem TensorProto_DataType, dims ...Dim) string {
	b.names[name] = true
	b.g.Input = append(b.g.Input, valueInfo(name, elem, dims))
	return name
}

// Output declares the value called src as graph output name. When src is the output of a node
// built here and not itself a graph output, Model and Graph rename that value (in its producer and
// every consumer), so no Identity copy runs; otherwise an Identity node copies src to name.
func (b *Builder) Output(src, name string, elem TensorProto_DataType, dims ...Dim) {
	if src != name {
		b.names[name] = true
		b.aliases = append(b.aliases, [2]string{src, name})
	}
	b.g.Output = append(b.g.Output, valueInfo(name, elem, dims))
}

// resolveAliases applies the renames of Output (once the graph is complete, so values used after
// their Output call are renamed too).
func (b *Builder) resolveAliases() {
	renamed := map[string]string{} // src → the output name it now has
	for _, a := range b.aliases {
		src := a[0]
		if to, ok := renamed[src]; ok {
			src = to // declared as an output before: copy that output
		} else if b.rename(src, a[1]) {
			renamed[src] = a[1]
			continue
		}
		b.g.Node = append(b.g.Node, &NodeProto{OpType: "Identity", Input: []string{src}, Output: []string{a[1]}, Name: b.unique("Identity")})
	}
	b.aliases = nil
}

// rename renames the node output src to name everywhere, if a node produces src and src is not
// already a graph output; it reports whether it did.
func (b *Builder) rename(src, name string) bool {
	for _, o := range b.g.Output {
		if o.Name == src {
			return false
		}
	}
	var producer *NodeProto
	for _, n := range b.g.Node {
		for _, o := range n.Output {
			if o == src {
				producer = n
			}
		}
	}
	if producer == nil {
		return false
	}
	for _, n := range b.g.Node {
		for i, o := range n.Output {
			if o == src {
				n.Output[i] = name
			}
		}
		for i, in := range n.Input {
			if in == src {
				n.Input[i] = name
			}
		}
	}
	return true
}

func int64s(dims []int) []int64 {
	out := make([]int64, len(dims))
	for i, d := range dims {
		out[i] = int64(d)
	}
	return out
}

func checkLen(n int, dims []int) {
	want := 1
	for _, d := range dims {
		want *= d
	}
	if want != n {
		panic(fmt.Sprintf("onnx: initializer has %d elements, shape %v needs %d", n, dims, want))
	}
}

func (b *Builder) addInit(name string, t TensorProto_DataType, dims []int, raw []byte) string {
	name = b.claim(name)
	b.g.Initializer = append(b.g.Initializer, &TensorProto{Name: name, DataType: int32(t), Dims: int64s(dims), RawData: raw})
	return name
}

// Float32 adds a float32 initializer (raw little-endian data) and returns its name. An empty dims
// list makes a scalar. It panics if len(data) does not match dims: that is a programming error.
func (b *Builder) Float32(name string, data []float32, dims ...int) string {
	checkLen(len(data), dims)
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return b.addInit(name, Float, dims, raw)
}

// Int8 adds an int8 initializer.
func (b *Builder) Int8(name string, data []int8, dims ...int) string {
	checkLen(len(data), dims)
	raw := make([]byte, len(data))
	for i, v := range data {
		raw[i] = byte(v)
	}
	return b.addInit(name, Int8, dims, raw)
}

// Uint8 adds a uint8 initializer.
func (b *Builder) Uint8(name string, data []uint8, dims ...int) string {
	checkLen(len(data), dims)
	return b.addInit(name, Uint8, dims, append([]byte(nil), data...))
}

// Int32 adds an int32 initializer.
func (b *Builder) Int32(name string, data []int32, dims ...int) string {
	checkLen(len(data), dims)
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	return b.addInit(name, Int32, dims, raw)
}

// Int64 adds an int64 initializer.
func (b *Builder) Int64(name string, data []int64, dims ...int) string {
	checkLen(len(data), dims)
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return b.addInit(name, Int64, dims, raw)
}

// Node adds a node with nOut outputs in the given domain ("" for the default ONNX domain) and
// returns the output names.
func (b *Builder) Node(domain, op string, inputs []string, nOut int, attrs ...*AttributeProto) []string {
	outs := make([]string, nOut)
	for i := range outs {
		outs[i] = b.unique(op + "_out")
	}
	b.g.Node = append(b.g.Node, &NodeProto{
		Name: b.unique(op), OpType: op, Domain: domain,
		Input: append([]string(nil), inputs...), Output: outs, Attribute: attrs,
	})
	return outs
}

// Op adds a default-domain node with one output and returns the output's name.
func (b *Builder) Op(op string, inputs ...string) string {
	return b.Node("", op, inputs, 1)[0]
}

// OpA is Op with attributes.
func (b *Builder) OpA(op string, inputs []string, attrs ...*AttributeProto) string {
	return b.Node("", op, inputs, 1, attrs...)[0]
}

// Graph returns the graph built so far.
func (b *Builder) Graph() *GraphProto {
	b.resolveAliases()
	return b.g
}

// Model wraps the graph in a ModelProto with the given operator sets.
func (b *Builder) Model(producer, version string, opsets ...*OperatorSetIdProto) *ModelProto {
	b.resolveAliases()
	return &ModelProto{
		IrVersion:       IRVersion,
		OpsetImport:     opsets,
		ProducerName:    producer,
		ProducerVersion: version,
		Graph:           b.g,
	}
}

// AttrInt is an INT attribute.
func AttrInt(name string, v int64) *AttributeProto {
	return &AttributeProto{Name: name, Type: AttributeProto_INT, I: v}
}

// AttrInts is an INTS attribute.
func AttrInts(name string, v ...int64) *AttributeProto {
	return &AttributeProto{Name: name, Type: AttributeProto_INTS, Ints: v}
}

// AttrFloat is a FLOAT attribute.
func AttrFloat(name string, v float32) *AttributeProto {
	return &AttributeProto{Name: name, Type: AttributeProto_FLOAT, F: v}
}

// AttrString is a STRING attribute.
func AttrString(name, v string) *AttributeProto {
	return &AttributeProto{Name: name, Type: AttributeProto_STRING, S: []byte(v)}
}

// Marshal encodes a model deterministically.
func Marshal(m *ModelProto) ([]byte, error) {
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal onnx model: %w", err)
	}
	return out, nil
}

// Unmarshal decodes a model.
func Unmarshal(data []byte) (*ModelProto, error) {
	m := &ModelProto{}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("unmarshal onnx model: %w", err)
	}
	return m, nil
}

// OpCounts counts the nodes of a graph by "domain:op_type" (just op_type in the default domain).
func OpCounts(g *GraphProto) map[string]int {
	out := map[string]int{}
	for _, n := range g.GetNode() {
		k := n.GetOpType()
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			k = d + ":" + k
		}
		out[k]++
	}
	return out
}

// SortedOps lists OpCounts as sorted "op×n" strings, for messages.
func SortedOps(g *GraphProto) []string {
	c := OpCounts(g)
	out := make([]string, 0, len(c))
	for k, v := range c {
		out = append(out, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(out)
	return out
}

// WeightBytes is the total size of the graph's initializers' raw data.
func WeightBytes(g *GraphProto) int {
	n := 0
	for _, t := range g.GetInitializer() {
		n += len(t.GetRawData()) + 4*len(t.GetFloatData()) + 4*len(t.GetInt32Data()) + 8*len(t.GetInt64Data())
	}
	return n
}
