// Package api is the Vigil server's analyst and admin HTTP API: JSON under
// /api/v1/, bearer tokens, roles, and /metrics.
//
// Access control lives in one place (auth.go): every route declares the
// permission it needs, the middleware authenticates the bearer token, checks
// the permission against the user's role and hands the handler a principal
// whose scope every query and object lookup goes through. An entity-admin's
// scope is its entity: list queries are forced to it, and objects of other
// entities are reported as not found (404), never returned.
//
// Roles: admin (the CERT: everything), analyst (the CERT: reads every entity,
// changes nothing), entity-admin (one entity: its agents, its enrollment
// tokens, its findings and its audit entries).
//
// /metrics (Prometheus text format) requires an admin bearer token; configure
// the scraper with `authorization: {credentials: <admin token>}`. The server
// binds the API to loopback by default, but a loopback address is not an
// identity (any local user could connect), so it is not used as one.
//
// Every write is audited by the store in the same transaction as the change,
// with the actor (user name) and the request's remote address.
package api
