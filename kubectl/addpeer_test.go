package kubectl

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Bad input is refused before anything is sent, with the flag and value.
func TestParseAddPeerRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"laptop"}, "--allowed-ips is required"},
		{[]string{"--allowed-ips", "198.18.200.1/32"}, "NAME missing"},
		{[]string{"laptop", "other", "--allowed-ips", "198.18.200.1/32"}, `one NAME expected, got "laptop" and "other"`},
		{[]string{"Laptop_1", "--allowed-ips", "198.18.200.1/32"}, `MeshPeer name "Laptop_1" is not valid`},
		{[]string{"laptop", "--allowed-ips", "198.18.200.1/33"}, `--allowed-ips: "198.18.200.1/33" is not a CIDR in canonical form`},
		{[]string{"laptop", "--allowed-ips", "198.18.200.1/24"}, `--allowed-ips: "198.18.200.1/24" has host bits set: want 198.18.200.0/24`},
		{[]string{"laptop", "--allowed-ips", "198.18.200.0/24,198.18.200.7/32"}, "--allowed-ips: 198.18.200.7/32 overlaps 198.18.200.0/24"},
		{[]string{"laptop", "--allowed-ips", "198.18.200.1/32", "--endpoint", "198.18.0.240"}, `invalid value "198.18.0.240" for flag -endpoint: "198.18.0.240" is not host:port`},
		{[]string{"laptop", "--allowed-ips", "198.18.200.1/32", "--endpoint", "laptop.example:99999"}, `port "99999" is not in 1-65535`},
		{[]string{"laptop", "--allowed-ips", "198.18.200.1/32", "--keepalive", "-5"}, `invalid value "-5" for flag -keepalive: "-5" is not a number of seconds in 0-65535`},
		{[]string{"laptop", "--allowed-ips", "198.18.200.1/32", "--service-cidrs", "198.18.128.0/20,198.18.144.0/20"}, "--service-cidrs: \"198.18.128.0/20,198.18.144.0/20\" has two IPv4 CIDRs"},
	} {
		_, _, err := parseAddPeer(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("add-peer %s: error %v, want one containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	_, f, err := parseAddPeer([]string{"--endpoint", "[2001:db8::240]:51820", "laptop", "--allowed-ips", "198.18.200.1/32, 2001:db8:300::1/128", "--keepalive", "0"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "laptop" || len(f.AllowedIPs) != 2 || f.Endpoint != "[2001:db8::240]:51820" || f.Keepalive != 0 {
		t.Errorf("parsed %+v", f)
	}
}

func TestParseShowConfRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "NAME missing"},
		{[]string{"laptop", "--keepalive", "70000"}, `"70000" is not a number of seconds in 0-65535`},
		{[]string{"laptop", "--service-cidrs", "198.18.128.1/20"}, "--service-cidrs: \"198.18.128.1/20\" has host bits set"},
	} {
		_, _, err := parseShowConf(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("showconf %s: error %v, want one containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestReadPrivateKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, p := range []string{write("key", laptopKey+"\n"), write("wg0.conf", "[Interface]\nPrivateKey = "+laptopKey+"\nAddress = 198.18.200.1/32\n")} {
		if k, err := readPrivateKey(p); err != nil || k != laptopKey {
			t.Errorf("readPrivateKey(%s) = %q, %v", p, k, err)
		}
	}
	if _, err := readPrivateKey(write("bad", "PrivateKey = nope\n")); err == nil || !strings.Contains(err.Error(), "--private-key-file="+dir+"/bad: not a WireGuard private key") {
		t.Errorf("bad key file: %v", err)
	}
}

func TestCheckAllowedIPsFree(t *testing.T) {
	m := &mesh{peers: testMesh(), services: testServices, nodes: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}}}}}}
	for p, want := range map[string]string{
		"198.19.1.128/25": "--allowed-ips: 198.19.1.128/25 overlaps 198.19.1.0/24 in MeshPeer n1 spec.allowedIPs",
		"198.18.201.0/24": "overlaps 198.18.201.1/32 in MeshPeer other-laptop",
		"198.18.128.5/32": "--allowed-ips: 198.18.128.5/32 overlaps the service CIDR 198.18.128.0/20 (from ServiceCIDR kubernetes)",
		"198.18.0.0/24":   "--allowed-ips: 198.18.0.0/24 contains the address 198.18.0.11 of node n1",
		"198.18.200.1/32": "",
	} {
		err := checkAllowedIPsFree([]netip.Prefix{netip.MustParsePrefix(p)}, m)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: error %v, want %q", p, err, want)
		}
	}
}
