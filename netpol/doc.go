// Package netpol is the pure model of Kubernetes NetworkPolicy
// (networking.k8s.io/v1): the cluster as the policies see it (namespaces,
// pods, nodes, normalized policies), a reference evaluator that explains
// its verdict (Evaluate), and an incremental index that the agent's
// nftables renderer turns into set elements (Index). No informers, no
// kernel: the agent, `kubectl wgmesh policy trace` and the tests share it.
//
// FromAPI (or NamespaceFromAPI, PodFromAPI, NodeFromAPI, PolicyFromAPI one
// by one) builds a Cluster; Evaluate judges one connection against it and
// says why. An Index holds the same objects, updated one event at a time,
// and answers by address, by selector (SelectorKey, whose Name is a set
// name) and by named port; Index.Snapshot is a Cluster again, so the agent
// can explain what it programmed with the same Evaluate.
//
// # Semantics
//
// Upstream's, as the API documentation and the e2e Netpol suite define
// them:
//
//   - policyTypes: when empty, a policy affects Ingress always and Egress
//     iff it has egress rules; when given, rules of a direction it does not
//     name are ignored.
//   - A pod is isolated in a direction iff a policy of its namespace
//     selects it with that type. An isolated pod accepts (ingress) or sends
//     (egress) a connection iff some rule of some selecting policy matches
//     it: policies are additive, there is no deny. An empty rule list
//     allows nothing; a rule {} allows everything.
//   - A rule matches iff one of its peers and one of its ports match; no
//     peers means any address, no ports any protocol and port (ICMP too).
//   - Peers: podSelector alone selects pods of the policy's namespace,
//     namespaceSelector alone every pod of the matching namespaces, both in
//     one peer the pods matching both. ipBlock matches any address in cidr
//     and in no except, pod addresses included.
//   - Ports: protocol defaults to TCP; no port means every port of the
//     protocol; endPort makes a range; a named port matches when the
//     destination pod (the selected pod for ingress, the peer for egress)
//     has a container port of that name, the rule's protocol and the
//     connection's port. A destination that is not a pod never matches a
//     named port.
//   - Pods with hostNetwork, without addresses, or in phase Succeeded or
//     Failed are never selected, neither as subjects nor as peers (their
//     addresses are the node's, or released).
//   - Traffic between a pod and its own node is always allowed, and so is
//     a pod reaching itself. A connection is allowed iff egress at the
//     source and ingress at the destination allow it.
//
// Namespaces always carry kubernetes.io/metadata.name=<name>: the API
// server sets it, and the model adds it where it is missing (policies
// read from files, a pod whose namespace has not been seen yet).
//
// # Invalid input fails closed
//
// The API server refuses invalid policies, so these arise from files given
// to the tracer or from API skew (an operator this version does not know).
// A policy is always produced, with its problems in Policy.Errors, each
// naming the policy, the field and the bad value. The rule is: an error can
// only take allowed traffic away, never add any.
//
//   - An invalid spec.podSelector: the policy selects every pod of its
//     namespace and allows nothing (its rules are dropped).
//   - An unknown policyTypes value: the policy isolates in both directions
//     and keeps only the rules of the directions it names validly.
//   - An invalid peer (a bad selector, an unparsable cidr or except, an
//     except outside cidr, no field or ipBlock beside a selector): that
//     peer matches nothing. The rule's other peers still apply; it is not
//     dropped, since a rule without peers would match every address.
//   - An invalid port (an unknown protocol, a number out of range, a bad
//     endPort, an invalid port name): that port matches nothing, for the
//     same reason.
package netpol
