package cidr

import (
	"fmt"
	"strings"
	"testing"
)

func TestConfigParse(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		want    []string // pool prefix/mask
		wantErr string   // substring; the flag and the value must be named
	}{
		{name: "default", cfg: Config{ClusterCIDRs: DefaultClusterCIDRs, NodeMaskSizeIPv4: 24, NodeMaskSizeIPv6: 64}, want: []string{"10.244.0.0/16 24"}},
		{name: "dual stack keeps order", cfg: Config{ClusterCIDRs: "2001:db8:100::/56, 198.19.0.0/16", NodeMaskSizeIPv4: 24, NodeMaskSizeIPv6: 64}, want: []string{"2001:db8:100::/56 64", "198.19.0.0/16 24"}},
		{name: "ipv6 /48 into /64", cfg: Config{ClusterCIDRs: "2001:db8::/48", NodeMaskSizeIPv4: 24, NodeMaskSizeIPv6: 64}, want: []string{"2001:db8::/48 64"}},
		{name: "overlap", cfg: Config{ClusterCIDRs: "10.244.0.0/16,10.244.128.0/17", NodeMaskSizeIPv4: 24}, wantErr: "--cluster-cidrs: 10.244.0.0/16 and 10.244.128.0/17 overlap"},
		{name: "family twice", cfg: Config{ClusterCIDRs: "10.244.0.0/16,10.245.0.0/16", NodeMaskSizeIPv4: 24}, wantErr: "--cluster-cidrs: 10.244.0.0/16 and 10.245.0.0/16 are both IPv4"},
		{name: "ipv6 twice", cfg: Config{ClusterCIDRs: "2001:db8:1::/56,2001:db8:2::/56", NodeMaskSizeIPv6: 64}, wantErr: "are both IPv6"},
		{name: "not a cidr", cfg: Config{ClusterCIDRs: "10.244.0.0", NodeMaskSizeIPv4: 24}, wantErr: `--cluster-cidrs: "10.244.0.0" is not a CIDR`},
		{name: "host bits", cfg: Config{ClusterCIDRs: "10.244.1.0/16", NodeMaskSizeIPv4: 24}, wantErr: `--cluster-cidrs: "10.244.1.0/16" has host bits set: want 10.244.0.0/16`},
		{name: "empty", cfg: Config{ClusterCIDRs: " , ", NodeMaskSizeIPv4: 24}, wantErr: "--cluster-cidrs"},
		{name: "mask bigger than pool", cfg: Config{ClusterCIDRs: "10.244.0.0/16", NodeMaskSizeIPv4: 8}, wantErr: "--node-cidr-mask-size-ipv4: 8 is not longer than the prefix of --cluster-cidrs 10.244.0.0/16"},
		{name: "mask equal to pool", cfg: Config{ClusterCIDRs: "10.244.0.0/16", NodeMaskSizeIPv4: 16}, wantErr: "--node-cidr-mask-size-ipv4: 16 is not longer"},
		{name: "ipv4 mask out of range", cfg: Config{ClusterCIDRs: "10.244.0.0/16", NodeMaskSizeIPv4: 33}, wantErr: "--node-cidr-mask-size-ipv4: 33 is out of range; want 17-32"},
		{name: "ipv4 mask zero", cfg: Config{ClusterCIDRs: "10.244.0.0/16", NodeMaskSizeIPv4: 0}, wantErr: "--node-cidr-mask-size-ipv4: 0 is out of range"},
		{name: "ipv6 mask out of range", cfg: Config{ClusterCIDRs: "10.244.0.0/16,2001:db8::/48", NodeMaskSizeIPv4: 24, NodeMaskSizeIPv6: 129}, wantErr: "--node-cidr-mask-size-ipv6: 129 is out of range"},
		{name: "too many subnets", cfg: Config{ClusterCIDRs: "2001:db8::/32", NodeMaskSizeIPv6: 64}, wantErr: "--node-cidr-mask-size-ipv6: 64 splits --cluster-cidrs 2001:db8::/32 into 2^32 node CIDRs; at most 2^20"},
		{name: "ipv4 mask ignored without ipv4 pool", cfg: Config{ClusterCIDRs: "2001:db8::/48", NodeMaskSizeIPv4: 99, NodeMaskSizeIPv6: 64}, want: []string{"2001:db8::/48 64"}},
		{name: "mapped", cfg: Config{ClusterCIDRs: "::ffff:10.0.0.0/104", NodeMaskSizeIPv6: 120}, wantErr: "is an IPv4-mapped IPv6 prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.Parse()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(): %v", err)
			}
			var s []string
			for _, p := range got {
				s = append(s, fmt.Sprintf("%s %d", p.Prefix, p.MaskSize))
			}
			if strings.Join(s, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("Parse() = %v, want %v", s, tt.want)
			}
		})
	}
}
