// Package deps guards hack/deps.sh, the one list of the Debian packages each make target
// needs: its test fails when a test, the product or a hack/ script runs a command that no
// list provides for the target that runs it (the drift that once let CI pass while make
// test failed on a fresh machine).
package deps
