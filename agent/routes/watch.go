package routes

import (
	"context"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WatchOptions select what Watch reacts to.
type WatchOptions struct {
	// Links whose changes (including removal) matter.
	Links []string
	// Namespace to subscribe in; nil = the caller's.
	Namespace *netns.NsHandle
	// OnError is told when the subscription fails; the periodic resync of
	// the caller then carries drift repair alone.
	OnError func(error)
}

// Watch calls notify when a wgmesh route is deleted or one of the links
// changes, until ctx ends. notify must not block (use a coalescing trigger).
func Watch(ctx context.Context, o WatchOptions, notify func()) error {
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	routes := make(chan netlink.RouteUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	errCb := func(err error) {
		if o.OnError != nil {
			o.OnError(err)
		}
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: o.Namespace, ErrorCallback: errCb}); err != nil {
		return err
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: o.Namespace, ErrorCallback: errCb}); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, l := range o.Links {
		names[l] = true
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				if u.Type == unix.RTM_DELROUTE && u.Protocol == Protocol {
					notify()
				}
			case u, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				if u.Link != nil && names[u.Link.Attrs().Name] {
					notify()
				}
			}
		}
	}()
	return nil
}
