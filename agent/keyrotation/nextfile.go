package keyrotation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/keys"
)

// NextFileName is the file, beside private.key in the state directory, that
// holds a rotation in progress: the next private key and the request. It is
// written before anything else happens (mode 0600, synced, renamed into
// place) and removed last, once completion (or a roll-back) is recorded.
const NextFileName = keys.FileName + ".next"

// Next is a rotation in progress.
type Next struct {
	PrivateKey wgtypes.Key
	// Token of the request (wgmesh.io/rotate-key, or auto-... for
	// --key-rotation-period).
	Token string
	// Started is when the key was made.
	Started time.Time
	// Previous is the public key it replaces.
	Previous wgtypes.Key
}

type nextJSON struct {
	PrivateKey string    `json:"privateKey"`
	Token      string    `json:"token"`
	Started    time.Time `json:"started"`
	Previous   string    `json:"previousPublicKey"`
}

func nextPath(stateDir string) string { return filepath.Join(stateDir, NextFileName) }

// writeNext persists a rotation (atomically, mode 0600).
func writeNext(stateDir string, n *Next) error {
	b, err := json.MarshalIndent(nextJSON{PrivateKey: n.PrivateKey.String(), Token: n.Token, Started: n.Started.UTC(), Previous: n.Previous.String()}, "", "  ")
	if err != nil {
		return err
	}
	return keys.WriteFile(nextPath(stateDir), append(b, '\n'))
}

// readNext returns the rotation in progress, nil when there is none. A file
// that cannot be used is an error that names it (never its content: it
// holds a private key).
func readNext(stateDir string) (*Next, error) {
	path := nextPath(stateDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var j nextJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s is not a key rotation record (JSON with privateKey, token, started, previousPublicKey)", path)
	}
	n := &Next{Token: j.Token, Started: j.Started}
	if n.PrivateKey, err = keys.ParseKeyFile(path+" privateKey", []byte(j.PrivateKey)); err != nil {
		return nil, err
	}
	if j.Previous != "" {
		if n.Previous, err = wgtypes.ParseKey(j.Previous); err != nil {
			return nil, fmt.Errorf("%s previousPublicKey %q: not a base64 WireGuard key", path, j.Previous)
		}
	}
	if j.Token == "" || j.Started.IsZero() {
		return nil, fmt.Errorf("%s: token or started is empty", path)
	}
	return n, nil
}

func removeNext(stateDir string) error {
	if err := os.Remove(nextPath(stateDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", nextPath(stateDir), err)
	}
	if d, err := os.Open(stateDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
