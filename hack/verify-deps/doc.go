// Package verifydeps holds the test that enforces hop's import direction
// (docs/ARCHITECTURE.md). It has no code of its own.
package verifydeps
