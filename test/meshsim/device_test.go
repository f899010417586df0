package meshsim

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeUAPI serves one UAPI "get" with reply on a unix socket, as
// wireguard-go does.
func fakeUAPI(t *testing.T, reply string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "wgmesh0.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		if line, _ := r.ReadString('\n'); line != "get=1\n" {
			return
		}
		_, _ = r.ReadString('\n')
		_, _ = io.WriteString(c, reply)
	}()
	return sock
}

func TestUAPIPeers(t *testing.T) {
	k1, k2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	sock := fakeUAPI(t, "private_key="+strings.Repeat("00", 32)+"\nlisten_port=51820\npublic_key="+k1+
		"\nendpoint=198.18.32.1:51820\nallowed_ip=198.19.0.16/28\npublic_key="+k2+"\nallowed_ip=198.19.0.32/28\nerrno=0\n\n")
	got, err := uapiPeers(sock)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[k1] || !got[k2] {
		t.Errorf("peers %v, want %s and %s", got, k1, k2)
	}
	if _, err := uapiPeers(fakeUAPI(t, "errno=19\n\n")); err == nil || !strings.Contains(err.Error(), "errno 19") {
		t.Errorf("a device error: %v", err)
	}
	if _, err := uapiPeers(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("no socket: no error")
	}
}

func TestHexKey(t *testing.T) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hexKey(k.String()), k.String(); len(got) != 64 || got == want {
		t.Errorf("hexKey(%s) = %q", want, got)
	}
	if hexKey("not a key") != "" {
		t.Error("an invalid key has a hex form")
	}
}

func TestRouteLogFirstAdd(t *testing.T) {
	r := newRouteLog("n1")
	p := netip.MustParsePrefix("198.19.0.16/28")
	t0 := time.Now()
	r.add(p, t0.Add(-time.Second)) // an earlier node's route to the same CIDR
	r.add(p, t0.Add(time.Second))
	r.add(p, t0.Add(2*time.Second))
	if at, ok := r.firstAdd(p, t0); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Errorf("first route at or after the join: %v %v", at, ok)
	}
	if _, ok := r.firstAdd(p, t0.Add(3*time.Second)); ok {
		t.Error("a route before the join counted")
	}
	if _, ok := r.firstAdd(netip.MustParsePrefix("198.19.0.32/28"), t0); ok {
		t.Error("a route never added counted")
	}
	r.stop()
	r.stop() // twice is safe
}
