package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// RunUserspace is the body of `wgmesh-agent userspace-wireguard`: it creates
// the TUN device name, runs a userspace WireGuard device on it and serves the
// UAPI socket in /var/run/wireguard that wgctrl talks to, until ctx ends or
// the device closes. It holds the data plane; the agent only configures it.
func RunUserspace(ctx context.Context, name string, log logr.Logger) error {
	tdev, err := tun.CreateTUN(name, device.DefaultMTU)
	if err != nil {
		return fmt.Errorf("creating TUN device %s: %w", name, err)
	}
	uapiFile, err := ipc.UAPIOpen(name)
	if err != nil {
		tdev.Close()
		return fmt.Errorf("opening UAPI socket for %s in /var/run/wireguard: %w", name, err)
	}
	logger := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, a ...any) { log.Error(nil, fmt.Sprintf(f, a...)) },
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
	uapi, err := ipc.UAPIListen(name, uapiFile)
	if err != nil {
		dev.Close()
		return fmt.Errorf("listening on UAPI socket for %s: %w", name, err)
	}
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Error(err, "UAPI accept")
				}
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	log.Info("userspace WireGuard running", "interface", name)
	select {
	case <-ctx.Done():
	case <-dev.Wait():
	}
	uapi.Close()
	dev.Close()
	// A listener made from a file does not unlink its socket on Close.
	_ = os.Remove(SocketPath(name))
	log.Info("userspace WireGuard stopped", "interface", name)
	return nil
}
