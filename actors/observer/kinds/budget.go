package kinds

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
	"golang.org/x/sync/semaphore"
)

// MemoryBudget is limits.max_response_bytes_total: the bytes of answers
// that the observers of all policies may hold at once. Each policy's
// limits bound what that policy holds (max_concurrent_requests answers of
// at most max_response_bytes); the budget bounds all policies together,
// so that many of them pointed at a service that answers large bodies
// cannot hold more than the unit's memory.
//
// An observation reserves what it may read (its cap) before it sends its
// request, waits within its own deadline while the budget is taken, and
// gives the bytes back once the answer is dropped. Waiters are served in
// turn, so that a large cap is not starved by small ones. A MemoryBudget
// is safe for concurrent use; the daemon has one, shared by every policy's
// TargetAccess.
type MemoryBudget struct {
	sem  *semaphore.Weighted
	size int64
	held atomic.Int64 // bytes reserved now
}

// NewMemoryBudget returns a budget of total bytes; 0 means the default.
func NewMemoryBudget(total yamldoc.ByteSize) *MemoryBudget {
	if total <= 0 {
		total = policy.DefaultBounds().MaxResponseBytesTotal
	}
	return &MemoryBudget{sem: semaphore.NewWeighted(int64(total)), size: int64(total)}
}

// reserve waits within ctx for n bytes and returns what gives them back,
// to be called once. A cap over the whole budget (max_response_bytes is
// at most the total, and a cap may read one byte more to tell an answer
// over it) reserves the whole budget.
func (b *MemoryBudget) reserve(ctx context.Context, n int64) (release func(), err error) {
	n = min(max(n, 0), b.size)
	if err := b.sem.Acquire(ctx, n); err != nil {
		return nil, fmt.Errorf("wait for memory for the answer (limits.max_response_bytes_total): %w", err)
	}
	b.held.Add(n)
	return func() {
		b.held.Add(-n)
		b.sem.Release(n)
	}, nil
}
