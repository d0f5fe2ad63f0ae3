package wasm

import (
	"context"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// The cost of close-on-context-done (see doc.go): the same calls on hosts
// with and without it, in one run.
//
//	go test -run '^$' -bench . -benchtime 2s ./wasm/
var closeOnDone = []struct {
	name string
	on   bool
}{{"close-on-done", true}, {"no-close-on-done", false}}

func benchHost(b *testing.B, on bool) *Host {
	b.Helper()
	h, err := newHost(context.Background(), HostOptions{Log: zerolog.Nop()}, on)
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, h.Close(context.Background())) })
	return h
}

// BenchmarkObserve is one call in a warm instance: empty is the host's
// per-call overhead (encode, polar_alloc, polar_observe returning at
// once); spin is 100k iterations of a guest loop, where the checks
// close-on-context-done adds at every loop back-edge show.
func BenchmarkObserve(b *testing.B) {
	guests := []struct {
		name, guest, config string
	}{
		{"empty", "empty", `{}`},
		{"spin", "loop", `{"spin":100000}`},
	}
	for _, c := range closeOnDone {
		for _, g := range guests {
			b.Run(c.name+"/"+g.name, func(b *testing.B) {
				h := benchHost(b, c.on)
				p, err := h.NewPlugin(context.Background(), PluginSpec{Path: guest(b, g.guest), ConfigJSON: []byte(g.config), Log: zerolog.Nop()})
				require.NoError(b, err)
				defer p.Close(context.Background())
				_, err = p.Observe(context.Background(), timeNow()) // instantiate
				require.NoError(b, err)
				b.ResetTimer()
				for b.Loop() {
					if _, err := p.Observe(context.Background(), timeNow()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkInstantiate is a fresh instance of a compiled Go plugin: the Go
// runtime's _initialize, then polar_abi_version.
func BenchmarkInstantiate(b *testing.B) {
	for _, c := range closeOnDone {
		b.Run(c.name, func(b *testing.B) {
			h := benchHost(b, c.on)
			m, err := h.acquire(context.Background(), guest(b, "empty"), "", false)
			require.NoError(b, err)
			defer h.release(m)
			for b.Loop() {
				ctx := context.Background()
				inst, err := h.instantiate(ctx, m, newCall(ctx, "empty.wasm", zerolog.Nop(), nil, nil, nil, DefaultTimeout), DefaultMemoryLimit)
				if err != nil {
					b.Fatal(err)
				}
				inst.close()
			}
		})
	}
}
