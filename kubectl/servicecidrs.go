package kubectl

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/podnet"
)

// serviceCIDRs are the cluster's service ranges and where they were found,
// for the comment in the configuration.
type serviceCIDRs struct {
	CIDRs  []netip.Prefix
	Source string
}

// agentSelector selects the chart's agent DaemonSet and pods.
var agentSelector = client.MatchingLabels{"app.kubernetes.io/name": "wgmesh", "app.kubernetes.io/component": "agent"}

// findServiceCIDRs finds the service ranges: the --service-cidrs flag when
// given, else the agent DaemonSet's --service-cidrs argument (the ranges
// the agents' service NAT serves), else the API server's ServiceCIDR
// objects. Notes say what could not be read.
func findServiceCIDRs(ctx context.Context, c client.Client, flag string) (serviceCIDRs, []string, error) {
	if flag != "" {
		ps, err := podnet.ParseCIDRList("--service-cidrs", flag)
		if err != nil {
			return serviceCIDRs{}, nil, err
		}
		return serviceCIDRs{CIDRs: ps, Source: "from --service-cidrs"}, nil, nil
	}
	var notes []string
	var dss appsv1.DaemonSetList
	if err := c.List(ctx, &dss, agentSelector); err != nil {
		notes = append(notes, fmt.Sprintf("cannot list the wgmesh agent DaemonSet: %v", err))
	}
	sort.Slice(dss.Items, func(i, j int) bool {
		return dss.Items[i].Namespace+"/"+dss.Items[i].Name < dss.Items[j].Namespace+"/"+dss.Items[j].Name
	})
	for _, ds := range dss.Items {
		for _, ctr := range ds.Spec.Template.Spec.Containers {
			for _, arg := range append(append([]string{}, ctr.Command...), ctr.Args...) {
				v, ok := strings.CutPrefix(arg, "--service-cidrs=")
				if !ok {
					continue
				}
				field := fmt.Sprintf("DaemonSet %s/%s argument --service-cidrs", ds.Namespace, ds.Name)
				ps, err := podnet.ParseCIDRList(field, v)
				if err != nil {
					notes = append(notes, err.Error())
					continue
				}
				if len(ps) > 0 {
					return serviceCIDRs{CIDRs: ps, Source: "from " + field}, notes, nil
				}
			}
		}
	}
	var scs networkingv1.ServiceCIDRList
	if err := c.List(ctx, &scs); err != nil {
		notes = append(notes, fmt.Sprintf("cannot list ServiceCIDRs (networking.k8s.io/v1): %v", err))
		return serviceCIDRs{Source: "no agent DaemonSet argument or ServiceCIDR object found"}, notes, nil
	}
	var out serviceCIDRs
	var names []string
	for _, sc := range scs.Items {
		if sc.DeletionTimestamp != nil {
			continue
		}
		for _, s := range sc.Spec.CIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				notes = append(notes, fmt.Sprintf("ServiceCIDR %s spec.cidrs %q: %v", sc.Name, s, err))
				continue
			}
			out.CIDRs = append(out.CIDRs, p.Masked())
		}
		names = append(names, sc.Name)
	}
	if len(out.CIDRs) == 0 {
		return serviceCIDRs{Source: "no agent DaemonSet argument or ServiceCIDR object found"}, notes, nil
	}
	sort.Strings(names)
	out.Source = "from ServiceCIDR " + strings.Join(names, ", ")
	return out, notes, nil
}
