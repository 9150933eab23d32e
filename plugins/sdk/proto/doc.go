// Package detectorpb holds the generated gRPC code of the Detector service
// (detector.proto), the wire contract between the agent and detector plugins.
// Regenerate with `go generate` (protoc, protoc-gen-go, protoc-gen-go-grpc);
// the generated files are committed.
package detectorpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative detector.proto
