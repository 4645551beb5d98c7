package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// The node network is where the lab's data plane runs (LAB.md, "The real
// data plane"): a network namespace the lab creates at start and removes at
// stop, with kube-proxy in it, every Running pod's address on its loopback
// and the pod's demo process listening there. A veth pair joins it to the
// host, and two host routes through that pair reach the lab's pod and
// Service addresses, so Prometheus, the probes and clients on the host take
// the path kube-proxy programs.
//
// Labs run side by side (CI starts three at once), so each takes a slot:
// its own namespace, veth pair, /20 of pods in 198.18.0.0/16, /20 of
// Services in 198.19.0.0/16 and /30 for the veth pair in 198.19.255.0/24.
// A slot is held with flock(2) on a file in slotDir, which the kernel
// releases when the lab's process ends however it ends: a slot whose lock
// can be taken while its namespace exists is what a crashed lab left, and
// is cleaned up before it is used again.

// slotDir holds the slots' lock files.
const slotDir = "/run/fledge-lab"

// slots is how many labs may run at once: 15 /20s of Services fit below
// the veth pairs' 198.19.255.0/24.
const slots = 15

// nodeNet is one lab's node network.
type nodeNet struct {
	Slot int
	// Namespace is the network namespace; HostLink its veth end on the host.
	Namespace, HostLink string
	// HostIP and NodeIP are the veth pair's ends: the host's and the node
	// network's, which is also the fake nodes' address.
	HostIP, NodeIP netip.Addr
	// Pods and Services are the lab's address blocks.
	Pods, Services netip.Prefix

	lock *os.File
	mu   sync.Mutex
	// forwarders carry connections from the node network to the apiserver
	// on the host's 127.0.0.1.
	forwarders []net.Listener
}

// slotNet is the node network of slot k, not yet created.
func slotNet(k int) *nodeNet {
	return &nodeNet{
		Slot:      k,
		Namespace: "fledge-lab-" + strconv.Itoa(k),
		HostLink:  "fledge-lab" + strconv.Itoa(k),
		HostIP:    netip.AddrFrom4([4]byte{198, 19, 255, byte(4*k + 1)}),
		NodeIP:    netip.AddrFrom4([4]byte{198, 19, 255, byte(4*k + 2)}),
		Pods:      netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(16 * k), 0}), 20),
		Services:  netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(16 * k), 0}), 20),
	}
}

// nodeNetRequirements says, in one line, what the node network needs that
// this machine lacks; "" when nothing.
func nodeNetRequirements() string {
	var missing []string
	if runtime.GOOS != "linux" {
		missing = append(missing, "Linux")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "the lab's node network needs Linux, root, ip (iproute2) and nft (nftables); missing: " + strings.Join(missing, ", ") +
		" (on Debian as root, make tools installs nftables)"
}

// createNodeNet takes a free slot, cleaning up what a crashed lab left in
// it, and creates its node network.
func createNodeNet(ctx context.Context) (*nodeNet, error) {
	for k := range slots {
		n := slotNet(k)
		f, err := lockSlot(k)
		if err != nil {
			return nil, fmt.Errorf("lab: node network: %w", err)
		}
		if f == nil {
			continue // another lab holds it
		}
		n.lock = f
		n.removeLinks(ctx) // what a crashed lab left, if anything
		if err := n.create(ctx); err != nil {
			n.remove(ctx)
			return nil, err
		}
		return n, nil
	}
	return nil, fmt.Errorf("lab: node network: all %d slots are taken by running labs", slots)
}

// create makes the namespace, the veth pair and the host routes.
func (n *nodeNet) create(ctx context.Context) error {
	host, node := n.HostIP.String()+"/30", n.NodeIP.String()+"/30"
	for _, args := range [][]string{
		{"netns", "add", n.Namespace},
		{"link", "add", n.HostLink, "type", "veth", "peer", "name", "eth0", "netns", n.Namespace},
		{"addr", "add", host, "dev", n.HostLink},
		{"link", "set", n.HostLink, "up"},
		{"-n", n.Namespace, "addr", "add", node, "dev", "eth0"},
		{"-n", n.Namespace, "link", "set", "eth0", "up"},
		{"-n", n.Namespace, "link", "set", "lo", "up"},
		{"route", "add", n.Pods.String(), "via", n.NodeIP.String(), "dev", n.HostLink},
		{"route", "add", n.Services.String(), "via", n.NodeIP.String(), "dev", n.HostLink},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			return fmt.Errorf("lab: node network %s: %w", n.Namespace, err)
		}
	}
	return nil
}

// AddPod puts a pod's address on the node network's loopback.
func (n *nodeNet) AddPod(ctx context.Context, ip netip.Addr) error {
	err := ipCmd(ctx, "-n", n.Namespace, "addr", "add", ip.String()+"/32", "dev", "lo")
	if err != nil && (strings.Contains(err.Error(), "File exists") || strings.Contains(err.Error(), "already assigned")) {
		return nil // left by a process that was stopped without its address
	}
	return err
}

// RemovePod takes a pod's address off again.
func (n *nodeNet) RemovePod(ctx context.Context, ip netip.Addr) error {
	err := ipCmd(ctx, "-n", n.Namespace, "addr", "del", ip.String()+"/32", "dev", "lo")
	if err != nil && strings.Contains(err.Error(), "Cannot assign") {
		return nil
	}
	return err
}

// Command is name with args, to be run inside the node network.
func (n *nodeNet) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Namespace, name}, args...)...)
}

// ForwardTo listens on the host's end of the veth pair and carries every
// connection to target on the host (the apiserver on 127.0.0.1), so that
// programs in the node network reach it. It returns the address it
// listens on.
func (n *nodeNet) ForwardTo(target string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(n.HostIP.String(), "0"))
	if err != nil {
		return "", fmt.Errorf("lab: node network: forward to %s: %w", target, err)
	}
	n.mu.Lock()
	n.forwarders = append(n.forwarders, ln)
	n.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at stop
			}
			go forward(c, target)
		}
	}()
	return ln.Addr().String(), nil
}

func forward(c net.Conn, target string) {
	defer c.Close()
	t, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer t.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(t, c); done <- struct{}{} }()
	go func() { io.Copy(c, t); done <- struct{}{} }()
	<-done
}

// remove deletes the node network (its namespace takes the nft tables and
// pod addresses along) and releases the slot. The programs in it must
// have been stopped first.
func (n *nodeNet) remove(ctx context.Context) error {
	n.mu.Lock()
	for _, ln := range n.forwarders {
		ln.Close()
	}
	n.forwarders = nil
	n.mu.Unlock()
	err := n.removeLinks(ctx)
	if n.lock != nil {
		// The file stays: removing it could let two labs lock two files
		// of one name.
		n.lock.Close() // releases the flock
		n.lock = nil
	}
	return err
}

// removeLinks deletes the host's veth end (its routes go with it) and the
// namespace, whichever exist.
func (n *nodeNet) removeLinks(ctx context.Context) error {
	var errs []error
	if err := ipCmd(ctx, "link", "del", n.HostLink); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err)
	}
	if err := ipCmd(ctx, "netns", "del", n.Namespace); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ipCmd runs ip(8) with args; its error carries what ip said.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddressBlocks are the lab's pod and Service address blocks.
func (l *Lab) AddressBlocks() (pods, services netip.Prefix) {
	return l.net.Pods, l.net.Services
}

// ProxyMode is the mode kube-proxy runs in.
func (l *Lab) ProxyMode() string { return l.proxyMode }

// NodeNetwork names the lab's network namespace and the host's end of its
// veth pair; "" without Options.NodeNetwork.
func (l *Lab) NodeNetwork() (namespace, hostLink string) {
	if l.net == nil {
		return "", ""
	}
	return l.net.Namespace, l.net.HostLink
}

// FreeNodeNetworkSlot returns a slot no running lab holds now, for a test
// that leaves something behind in it as a crashed lab would.
func FreeNodeNetworkSlot() (int, bool) {
	for k := range slots {
		f, err := lockSlot(k)
		if err != nil {
			return 0, false
		}
		if f != nil {
			f.Close()
			return k, true
		}
	}
	return 0, false
}

// lockSlot takes slot k's lock and returns its file, which holds the lock
// until closed; nil without error when another lab holds it.
func lockSlot(k int) (*os.File, error) {
	if err := os.MkdirAll(slotDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(slotDir, "slot-"+strconv.Itoa(k)+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := tryLock(f); err != nil {
		f.Close()
		return nil, nil
	}
	return f, nil
}

// nodeCIDRs splits the lab's pod block into one block per node, each as
// large as n nodes allow (a /21 each for 2 nodes).
func nodeCIDRs(pods netip.Prefix, n int) ([]netip.Prefix, error) {
	bits := 0
	for 1<<bits < n {
		bits++
	}
	size := pods.Bits() + bits
	if size > 30 {
		return nil, fmt.Errorf("lab: %d nodes do not fit in %s", n, pods)
	}
	out := make([]netip.Prefix, n)
	base := pods.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for i := range n {
		a := start + uint32(i)<<(32-size)
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), size)
	}
	return out, nil
}
