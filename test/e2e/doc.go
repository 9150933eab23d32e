// Package e2e holds Vigil's end-to-end tests: they start the real binaries
// from $VIGIL_BIN (server, agents, detector plugins) on loopback and in
// network namespaces that the tests create, and run only when VIGIL_E2E=1
// (make test sets it).
package e2e
