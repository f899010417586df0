package netns

import "testing"

func TestParseTcpdump(t *testing.T) {
	out := `IP 198.18.0.11.51820 > 198.18.1.254.51820: UDP, length 148
IP6 2001:db8::11.51820 > 2001:db8::12.51820: UDP, length 96
IP 198.19.1.2 > 198.19.2.3: ICMP echo request, id 7, seq 1, length 64
IP 198.18.0.11.43210 > 198.18.0.1.6443: Flags [S], seq 1, win 64240, length 0
ARP, Request who-has 198.18.0.1 tell 198.18.0.11, length 28
eth0  Out IP 198.18.0.11.53 > 198.18.0.12.5353: 1+ A? x. (17)
`
	got := ParseTcpdump(out)
	want := []Packet{
		{Family: "IP", Src: "198.18.0.11", SrcPort: 51820, Dst: "198.18.1.254", DstPort: 51820, Proto: "UDP"},
		{Family: "IP6", Src: "2001:db8::11", SrcPort: 51820, Dst: "2001:db8::12", DstPort: 51820, Proto: "UDP"},
		{Family: "IP", Src: "198.19.1.2", Dst: "198.19.2.3", Proto: "ICMP"},
		{Family: "IP", Src: "198.18.0.11", SrcPort: 43210, Dst: "198.18.0.1", DstPort: 6443, Proto: "TCP"},
		{Family: "ARP"},
		{Family: "IP", Src: "198.18.0.11", SrcPort: 53, Dst: "198.18.0.12", DstPort: 5353, Proto: "1+"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		g := got[i]
		g.Line = ""
		if g != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, g, want[i])
		}
	}
}
