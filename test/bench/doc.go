// Package bench holds wgmesh's benchmarks that need network namespaces and
// print ratios measured side by side in one run (`make bench`).
package bench
