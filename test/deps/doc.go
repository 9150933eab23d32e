// Package deps checks the house rules of the repository that the compiler
// does not: who may import whom (DESIGN.md section 1), where cgo and os/exec
// may appear, and that every package states its job in a doc comment.
package deps
