package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The overhead row models a host where the observed service and observerd
// share the machine, while the clients and RabbitMQ are elsewhere: the
// service and the daemon run on CPU 0, the load generator (this process)
// and the RabbitMQ node on the other CPUs. Without that, on a small machine
// the broker's own work for the events would be counted as the daemon's
// cost to the service.

// pinning says where each side runs; zero means no pinning (one CPU).
type pinning struct {
	service string // taskset list for the service and the daemon
	others  unix.CPUSet
}

func newPinning() pinning {
	n := runtime.NumCPU()
	if n < 2 {
		return pinning{}
	}
	var others unix.CPUSet
	for cpu := 1; cpu < n; cpu++ {
		others.Set(cpu)
	}
	return pinning{service: "0", others: others}
}

// command runs bin with args on the service's CPUs.
func (p pinning) command(bin string, args ...string) *exec.Cmd {
	if p.service == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command("taskset", append([]string{"-c", p.service, bin}, args...)...)
}

// pin moves every thread of pid to the other CPUs.
func (p pinning) pin(pid int) error {
	if p.service == "" {
		return nil
	}
	return setAffinity(pid, &p.others)
}

// unpin lets every thread of pid run anywhere again.
func unpin(pid int) error {
	var all unix.CPUSet
	for cpu := range runtime.NumCPU() {
		all.Set(cpu)
	}
	return setAffinity(pid, &all)
}

func setAffinity(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("list threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may end meanwhile: that is not a failure.
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("set cpu affinity of %d/%d: %w", pid, tid, err)
		}
	}
	return nil
}

// nodePID is the RabbitMQ node's OS process.
func (e *env) nodePID() (int, error) {
	b, err := os.ReadFile(filepath.Join(e.node.Dir, "node.pid"))
	if err != nil {
		return 0, fmt.Errorf("read rabbitmq pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
