package cluster

import (
	"context"
	"reflect"
	"sync"
)

// A shared cluster lets the tests of one package reuse a cluster instead of starting one
// each (a start costs about 3s plus the agents' convergence). Tests that change the
// cluster's shape (RemoveNode, killing the control plane) should start their own.
var shared struct {
	mu   sync.Mutex
	c    *Cluster
	opts Options
}

// Shared returns the package-wide cluster started with opts, starting it on first use. A
// call with different options stops the shared cluster and starts a new one. Call
// StopShared from TestMain after m.Run.
func Shared(ctx context.Context, opts Options) (*Cluster, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	key := opts
	key.Log = nil
	if shared.c != nil && reflect.DeepEqual(shared.opts, key) {
		return shared.c, nil
	}
	if shared.c != nil {
		shared.c.Stop()
		shared.c = nil
	}
	c, err := Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	shared.c, shared.opts = c, key
	return c, nil
}

// StopShared stops the shared cluster, if any.
func StopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c == nil {
		return nil
	}
	err := shared.c.Stop()
	shared.c = nil
	return err
}
