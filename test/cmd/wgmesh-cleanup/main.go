// Command wgmesh-cleanup removes what local clusters and namespace tests left behind:
// every wgm namespace, machine mount namespace, host link and mount whose owner no longer
// runs, and the processes inside them (test/netns.CleanupLeftovers). With -list it only
// prints what carries the prefix.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/wgmesh/wgmesh/test/netns"
)

func main() {
	list := flag.Bool("list", false, "only list every object with the wgm prefix (owned or not)")
	flag.Parse()
	if *list {
		lo, err := netns.Leftovers(true)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wgmesh-cleanup:", err)
			os.Exit(1)
		}
		for _, l := range lo {
			fmt.Println(l)
		}
		return
	}
	err := netns.CleanupLeftovers()
	if rerr := netns.ReleaseDirs(); err == nil {
		err = rerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgmesh-cleanup:", err)
		os.Exit(1)
	}
}
