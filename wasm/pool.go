package wasm

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// Instances of a stateless module (one whose polar_stateless returns 1)
// are shared by the plugins of one pool: those that run the same module,
// with the same memory limit, and the same PluginSpec.Share, which the
// daemon sets to the policy (its name and revision). A call takes an idle
// instance of its pool, or makes one; after it, a healthy instance goes
// back to the pool, a failed one is discarded as ever. At most maxBusy
// calls of a pool hold an instance at once; the others wait for one
// within their deadline. A pool so holds as many instances as calls ran
// at once, at most maxBusy, and at most maxIdle of them idle: a thousand
// observers of one policy that run the same plugin every few seconds
// cost an instance or two, not a thousand, and a thousand first calls at
// once (the daemon's start) make maxBusy instances, not a thousand. The state stays each
// plugin's own (Plugin.state, passed in every ObserveRequest); what a
// call leaves in an instance's memory may be seen by the next call of
// another observer of the same policy, which is what a module declares
// it does not mind by being stateless, and never by another policy's.
type pool struct {
	key  poolKey
	refs int // the plugins in the pool; guarded by Host.mu
	// stateless is set once the module is known to be stateless (a
	// check, or an instance, said so): its calls then take a slot.
	stateless atomic.Bool
	slots     chan struct{} // a call holding an instance holds one

	mu   sync.Mutex
	idle []*instance
}

type poolKey struct {
	sum   string // the module's sha256
	share string // PluginSpec.Share
	limit uint64 // the instances' memory limit
}

// maxIdle bounds the idle instances of a pool: calls beyond it at once
// make instances that are closed when they end. As many as the daemon
// runs Go code in parallel: more could never run at once.
var maxIdle = runtime.GOMAXPROCS(0)

// maxBusy bounds the calls of a pool that hold an instance at once: the
// instances of a pool are maxBusy × 3.4 MiB (a Go plugin) at most. As many
// as a policy's HTTP requests may run at once by default
// (max_concurrent_requests): more calls could only wait for the policy's
// limiter, an instance each.
const maxBusy = 16

// enter waits, within ctx, for a slot of the pool; leave frees it.
func (pl *pool) enter(ctx context.Context) error {
	select {
	case pl.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (pl *pool) leave() { <-pl.slots }

// joinPool returns the pool of key, making it if none, with one more
// plugin in it.
func (h *Host) joinPool(key poolKey) *pool {
	h.mu.Lock()
	defer h.mu.Unlock()
	pl, ok := h.pools[key]
	if !ok {
		pl = &pool{key: key, slots: make(chan struct{}, maxBusy)}
		h.pools[key] = pl
	}
	pl.refs++
	return pl
}

// leavePool takes a plugin out of pl, closing its idle instances with the
// last one.
func (h *Host) leavePool(pl *pool) {
	h.mu.Lock()
	pl.refs--
	last := pl.refs == 0
	if last && h.pools[pl.key] == pl {
		delete(h.pools, pl.key)
	}
	h.mu.Unlock()
	if !last {
		return
	}
	pl.mu.Lock()
	idle := pl.idle
	pl.idle = nil
	pl.mu.Unlock()
	for _, inst := range idle {
		inst.close()
	}
}

// get takes an idle instance, or returns nil when there is none.
func (pl *pool) get() *instance {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := len(pl.idle)
	if n == 0 {
		return nil
	}
	inst := pl.idle[n-1]
	pl.idle[n-1] = nil
	pl.idle = pl.idle[:n-1]
	return inst
}

// put returns a healthy instance after a call, or closes it when the
// pool has maxIdle idle already.
func (pl *pool) put(inst *instance) {
	pl.mu.Lock()
	if len(pl.idle) < maxIdle {
		pl.idle = append(pl.idle, inst)
		inst = nil
	}
	pl.mu.Unlock()
	if inst != nil {
		inst.close()
	}
}

// idleCount is how many instances wait in the pool.
func (pl *pool) idleCount() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return len(pl.idle)
}
