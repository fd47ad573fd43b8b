// Package arch holds the test of lem's package layers (arch_test.go): the
// one direction of imports that docs/architecture.md draws.
package arch
