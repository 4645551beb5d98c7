// Package lab runs a real Kubernetes control plane on one machine for fledge's
// tests, benchmarks and demo: etcd, kube-apiserver (RBAC on), the controller
// manager, the scheduler and kwok, which plays the kubelet of N fake nodes.
//
// Each lab lives in its own temporary directory, listens only on 127.0.0.1
// ports chosen when it starts, and stops exactly the processes it started, by
// PID. Pods get addresses in 198.18.0.0/16 (kwok's --cidr): EndpointSlice
// validation rejects loopback addresses, and nothing in the lab ever connects
// to a pod address.
//
// The programs come from `make tools` (test/tools/build.sh), which builds them
// from source at pinned versions into a per-user cache and links them into the
// checkout's bin/.
package lab
