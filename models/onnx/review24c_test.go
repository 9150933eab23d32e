package onnx

import "testing"

// TestOutputSameValueTwice: one node output declared as two graph outputs.
// The first Output renames the value in place; the second fell back to an
// Identity of the old name, which no node produced any more: ONNX Runtime
// refuses such a graph. Every node input must be a graph input, an
// initializer or a node output.
func TestOutputSameValueTwice(t *testing.T) {
	b := NewBuilder("g")
	x := b.Input("features", Float, Param("N"), Fixed(3))
	s := b.OpA("ReduceSum", []string{x}, AttrInts("axes", 1), AttrInt("keepdims", 0))
	b.Output(s, "score", Float, Param("N"))
	b.Output(s, "score2", Float, Param("N"))
	g := b.Model("vigil", "test", Opset("", 17)).GetGraph()
	defined := map[string]bool{}
	for _, in := range g.GetInput() {
		defined[in.GetName()] = true
	}
	for _, in := range g.GetInitializer() {
		defined[in.GetName()] = true
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			defined[o] = true
		}
	}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			if !defined[in] {
				t.Errorf("%s node reads %q, which nothing defines", n.GetOpType(), in)
			}
		}
	}
	for _, o := range g.GetOutput() {
		if !defined[o.GetName()] {
			t.Errorf("graph output %q is not defined", o.GetName())
		}
	}
}
