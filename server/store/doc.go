// Package store is the Vigil server's durable state: entities, agents and
// their certificates, enrollment tokens, findings, models and rollouts, API
// users and the append-only, hash-chained audit log.
//
// The default back end is one SQLite file (modernc.org/sqlite, pure Go) in WAL
// mode with synchronous=FULL, so a findings batch is on disk before
// InsertFindings returns and the endpoint acknowledges it. Writes go through a
// single writer connection (BEGIN IMMEDIATE); reads use a separate pool of
// read-only connections, which WAL lets run beside the writer. The schema is
// created and upgraded by the versioned migrations in migrate.go.
// PruneFindings (retention.go) deletes old findings without letting an
// agent's highest seq go back; Backup (backup.go) copies the database while
// the server runs.
//
// Callers that need to stay independent of SQLite depend on the Store
// interface (or a smaller interface of their own) rather than on *DB.
package store
