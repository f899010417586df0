// Package keyrotation rotates a node's WireGuard key without downtime, on
// request (the Node annotation wgmesh.io/rotate-key, set by `kubectl wgmesh
// rotate-key`) or when the key is older than --key-rotation-period.
//
// WireGuard has one private key per device and one peer per public key, so
// the switch cannot be seamless: the others replace this node's peer (old
// key removed, new key added, by the agents' normal peer diff) when the
// operator publishes the new key in the node's MeshPeer, and this node
// switches its private key when it sees the same publication. The steps
// keep that window to the spread between the agents' watches:
//
//  1. generate the next key and persist it first: private.key.next (JSON
//     with the key, the request token, the start time and the previous
//     public key; mode 0600, synced, renamed into place);
//  2. announce its public key in wgmesh.io/public-key (the device keeps
//     the current key);
//  3. wait until the operator publishes it in the MeshPeer's
//     spec.publicKey: peers learn it from the same watch event;
//  4. switch the device's private key (wgctrl PrivateKey only, never the
//     peers), then write the key to private.key (atomically);
//  5. send one packet through the tunnel to every node peer's bridge
//     gateway, so that every session is handshaken at once: a peer behind
//     NAT cannot be reached by the others until it sends. The others do
//     the same towards a peer whose key changed, and start its new peer
//     from the old one's learned endpoint (agent/wireguard);
//  6. once every node peer connected before the switch has handshaken
//     with the new key (or after the confirmation timeout), record the
//     token in wgmesh.io/key-rotated, emit KeyRotated and remove
//     private.key.next.
//
// If the operator does not publish within the publish timeout the
// rotation is rolled back: the token is recorded, KeyRotationRolledBack
// emitted, private.key.next removed and the current key announced again.
//
// Every decision is taken by Decide from what is on disk and what the API
// server shows, never from memory, so an agent killed at any point resumes
// where it stopped:
//
//	killed ...                                  on restart
//	while writing private.key.next              temporary file removed; no rotation on disk: started again (same token)
//	after private.key.next, before announcing   announces the next key, goes on
//	after announcing, before the publication    waits for it (the same next key, not a new one)
//	after the publication (peers switched),     switches at once (the mesh to this node is down
//	  before the device switched                  from the publication until the agent is back)
//	after the switch, before private.key        device key == next: writes private.key, goes on
//	after private.key, before the handshakes    kicks every peer again, confirms, records
//	after recording, before removing the file   removes private.key.next, no second Event
//	during a roll-back, after recording it      removes private.key.next, announces the current key
//	private.key.next unreadable                 rolled back (the current key stays)
//
// TestRotationCrashAtEveryStep kills the agent before each of these steps
// in turn; TestKeyRotation (test/e2e) kills a real one half-way.
package keyrotation
