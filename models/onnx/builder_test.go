package onnx

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func TestBuilderRoundTrip(t *testing.T) {
	b := NewBuilder("g")
	x := b.Input("features", Float, Param("N"), Fixed(3))
	w := b.Float32("w", []float32{1, 2, 3, 4, 5, 6}, 3, 2)
	y := b.Op("MatMul", x, w)
	s := b.OpA("ReduceSum", []string{y}, AttrInts("axes", 1), AttrInt("keepdims", 0))
	b.Output(s, "score", Float, Param("N"))
	b.Output(x, "echo", Float, Param("N"), Fixed(3)) // a graph input needs an Identity copy
	m := b.Model("vigil", "test", Opset("", 17))
	raw, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.GetGraph().GetInput()[0].GetType().GetTensorType().GetShape().GetDim()[0].GetDimParam(); got != "N" {
		t.Fatalf("dim_param = %q", got)
	}
	if got := OpCounts(back.GetGraph()); got["MatMul"] != 1 || got["ReduceSum"] != 1 || got["Identity"] != 1 {
		t.Fatalf("ops = %v", got)
	}
	// The node output "score" was renamed in place: ReduceSum writes the graph output directly.
	for _, n := range back.GetGraph().GetNode() {
		if n.GetOpType() == "ReduceSum" && n.GetOutput()[0] != "score" {
			t.Fatalf("ReduceSum writes %q, want the output name", n.GetOutput()[0])
		}
	}
	if WeightBytes(back.GetGraph()) != 24 {
		t.Fatalf("weight bytes = %d", WeightBytes(back.GetGraph()))
	}
}

// TestFieldNumbers pins a few wire field numbers against the ONNX specification, so a careless
// edit of onnx.proto cannot silently produce files ONNX Runtime misreads.
func TestFieldNumbers(t *testing.T) {
	m := &ModelProto{IrVersion: 8, OpsetImport: []*OperatorSetIdProto{{Version: 17}}, Graph: &GraphProto{Name: "g"}}
	raw, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var fields []protowire.Number
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		raw = raw[n:]
		fields = append(fields, num)
		n = protowire.ConsumeFieldValue(num, typ, raw)
		raw = raw[n:]
	}
	want := []protowire.Number{1, 7, 8} // ir_version, graph, opset_import (marshal order is by field number)
	if len(fields) != len(want) {
		t.Fatalf("fields %v, want %v", fields, want)
	}
	for i := range want {
		if fields[i] != want[i] {
			t.Fatalf("fields %v, want %v", fields, want)
		}
	}
	fd := File_onnx_proto.Messages()
	check := map[string]map[string]protowire.Number{
		"NodeProto":      {"input": 1, "output": 2, "name": 3, "op_type": 4, "attribute": 5, "domain": 7},
		"GraphProto":     {"node": 1, "initializer": 5, "input": 11, "output": 12, "value_info": 13},
		"TensorProto":    {"dims": 1, "data_type": 2, "float_data": 4, "name": 8, "raw_data": 9},
		"AttributeProto": {"name": 1, "f": 2, "i": 3, "s": 4, "t": 5, "floats": 7, "ints": 8, "type": 20},
		"ModelProto":     {"ir_version": 1, "producer_name": 2, "graph": 7, "opset_import": 8, "metadata_props": 14},
		"ValueInfoProto": {"name": 1, "type": 2},
	}
	for msg, fieldsWant := range check {
		md := fd.ByName(protoreflectName(msg))
		if md == nil {
			t.Fatalf("message %s missing", msg)
		}
		for f, num := range fieldsWant {
			fdesc := md.Fields().ByName(protoreflectName(f))
			if fdesc == nil || fdesc.Number() != num {
				t.Errorf("%s.%s: want field %d", msg, f, num)
			}
		}
	}
}

func protoreflectName(s string) protoreflect.Name { return protoreflect.Name(s) }
