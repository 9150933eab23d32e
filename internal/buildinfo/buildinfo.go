// Package buildinfo holds the version stamped into every Vigil binary at
// link time (-X .../internal/buildinfo.Version=...).
package buildinfo

// Version is the build's version, from git at build time; "dev" otherwise.
var Version = "dev"
