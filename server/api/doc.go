// Package api is the Vigil server's analyst and admin HTTP API: JSON under
// /api/v1/, bearer tokens, roles, a live stream of findings, exports, and
// /metrics. The routes and their roles are described in OpenAPI 3 at
// /api/v1/openapi.json (openapi/openapi.json; a test keeps it in step with
// the routes registered in api.go). With Options.Console the same handler
// serves the web console under /.
//
// Access control lives in one place (auth.go): every route declares the
// permission it needs, the middleware authenticates the bearer token, checks
// the permission against the user's role and hands the handler a principal
// whose scope every query and object lookup goes through. An entity-admin's
// scope is its entity: list queries, the live stream and exports are forced
// to it, a filter naming another entity is 403, and objects of other
// entities (findings, agents, suppressions) are reported as not found (404),
// never returned.
//
// Roles: admin (the CERT: everything), analyst (the CERT: reads every entity
// and triages findings, manages nothing else), entity-admin (one entity: its
// agents, its enrollment tokens, its findings and their triage, its audit
// entries).
//
// Triage and suppressions: POST /findings/{id}/triage sets status (new,
// acknowledged, false_positive, resolved), assignee and a comment. Marking a
// finding false_positive creates a suppression for the finding's entity:
// {detector, src_ip, dst_ip, dst_port, proto, path} taken from the finding
// (the source port is left out, it is ephemeral). GET /suppressions lists
// them per entity. How agents apply them: the QUIC endpoint sends the
// entity's active suppressions (wirev1.Suppressions on the CONTROL stream)
// to each of its agents after HelloAck and, through
// Options.OnSuppressionsChanged, at once after every change; before spooling a
// finding the agent drops it when any suppression matches, that is when the
// detector is equal and every non-empty field of the suppression equals the
// finding's context (dst_port 0 = any; proto compared case-insensitively;
// store.Suppression.Matches is the reference), and counts the drop in a
// "findings_suppressed" counter reported in Status. Lifting a suppression
// (or reopening its finding) removes it from the next list sent.
//
// The live stream (GET /findings/stream) is Server-Sent Events; see
// stream.go for how it is fed (polling the store by id cursor) and resumed
// (Last-Event-ID or ?after=). Exports (GET /findings/export) are JSON lines
// in the API's finding JSON or OCSF Detection Finding (package export).
//
// /metrics (Prometheus text format) requires an admin bearer token; configure
// the scraper with `authorization: {credentials: <admin token>}`. The server
// binds the API to loopback by default, but a loopback address is not an
// identity (any local user could connect), so it is not used as one.
//
// Every write is audited by the store in the same transaction as the change,
// with the actor (user name), the time and the request's remote address; the
// audit log is hash-chained (GET /audit/verify, vigilctl audit verify).
package api
