package kinds

// Held is how many bytes of the budget are reserved now.
func (b *MemoryBudget) Held() int64 { return b.held.Load() }

// SlotsTaken is how many of the policy's concurrency slots are taken.
func (s *TargetAccess) SlotsTaken() int { return len(s.slots) }

// IdleConnsPerHost is idleConnsPerHost.
const IdleConnsPerHost = idleConnsPerHost
