// Package suppresscheck holds only tests: it checks that the agent applies
// the server's suppressions by exactly the server's rule. The rule exists
// twice because the agent must not import the server: store.Suppression.
// Matches (server/store, the reference) and suppress.Rule.Matches
// (agent/suppress). Only test/ may import both sides.
package suppresscheck
