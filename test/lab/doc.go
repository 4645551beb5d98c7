// Package lab runs a real Kubernetes control plane on one machine for fledge's
// tests, benchmarks and demo: etcd, kube-apiserver (RBAC on), the controller
// manager, the scheduler and kwok, which plays the kubelet of N fake nodes.
//
// Each lab lives in its own temporary directory, runs its control plane on
// 127.0.0.1 ports chosen when it starts, and stops exactly the processes it
// started, by PID. Its data plane is real (nodenet.go): a network namespace
// of its own with kube-proxy in it, pods on their own addresses in a /20 of
// 198.18.0.0/16 (kwok's --cidr), Services on ClusterIPs in a /20 of
// 198.19.0.0/16, and the demo app of each pod listening on the pod's IP
// there. Traffic goes only to 127.0.0.1 and to those addresses.
//
// The programs come from `make tools` (test/tools/build.sh), which builds them
// from source at pinned versions into a per-user cache and links them into the
// checkout's bin/.
package lab
