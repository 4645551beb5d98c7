package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memory is the manager's memory at one moment.
type memory struct {
	// RSS is VmRSS of /proc/PID/status: the pages the process has in RAM.
	RSS uint64 `json:"rssBytes"`
	// HWM is VmHWM: the highest RSS since the process started.
	HWM uint64 `json:"hwmBytes"`
	// HeapInuse is go_memstats_heap_inuse_bytes of the manager's /metrics:
	// the Go heap's spans in use (live objects and not yet swept garbage).
	HeapInuse uint64 `json:"heapInuseBytes"`
}

// procMemory reads VmRSS and VmHWM of process pid.
func procMemory(pid int) (rss, hwm uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read the manager's memory: %w", err)
	}
	return parseProcStatus(string(data))
}

// parseProcStatus reads VmRSS and VmHWM, in bytes, from the text of
// /proc/PID/status, where they are given in kB ("VmRSS:	   56320 kB").
func parseProcStatus(status string) (rss, hwm uint64, err error) {
	found := 0
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status line %q: want a number of kB", sc.Text())
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status line %q: %w", sc.Text(), err)
		}
		if key == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("/proc status has no VmRSS and VmHWM (found %d of them)", found)
	}
	return rss, hwm, nil
}

// manager is the fledge process being measured.
type manager struct {
	pid        int
	metricsURL string // its /metrics
	http       *http.Client
	// webhooks are the names of the webhooks it registered with the
	// apiserver, as the apiserver's metrics label them.
	webhooks []string
}

// memory reads the manager's RSS and heap now.
func (m *manager) memory(ctx context.Context) (memory, error) {
	rss, hwm, err := procMemory(m.pid)
	if err != nil {
		return memory{}, err
	}
	ms, err := scrape(ctx, m.http, m.metricsURL)
	if err != nil {
		return memory{}, err
	}
	heap, ok := ms.value("go_memstats_heap_inuse_bytes", nil)
	if !ok {
		return memory{}, fmt.Errorf("the manager's /metrics has no go_memstats_heap_inuse_bytes")
	}
	return memory{RSS: rss, HWM: hwm, HeapInuse: uint64(heap)}, nil
}

// settledMemory waits settle, then reads the manager's memory.
func (m *manager) settledMemory(ctx context.Context, settle time.Duration) (memory, error) {
	if err := sleep(ctx, settle); err != nil {
		return memory{}, err
	}
	return m.memory(ctx)
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// sampler records the highest RSS (every 500ms) and heap in use (every
// 2s, a scrape of /metrics) of the manager while it runs.
type sampler struct {
	mu      sync.Mutex
	maxRSS  uint64
	maxHeap uint64
	err     error
	stop    context.CancelFunc
	done    chan struct{}
}

func (m *manager) sample(ctx context.Context) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			rss, _, err := procMemory(m.pid)
			var heap float64
			if err == nil && i%4 == 0 {
				var ms metrics
				if ms, err = scrape(ctx, m.http, m.metricsURL); err == nil {
					heap, _ = ms.value("go_memstats_heap_inuse_bytes", nil)
				}
			}
			s.mu.Lock()
			if err != nil && ctx.Err() == nil && s.err == nil {
				s.err = err
			}
			s.maxRSS = max(s.maxRSS, rss)
			s.maxHeap = max(s.maxHeap, uint64(heap))
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the highest RSS and heap seen; it
// may be called more than once.
func (s *sampler) finish() (rss, heap uint64, err error) {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxRSS, s.maxHeap, s.err
}
