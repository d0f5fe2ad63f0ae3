//go:build !wasip1

package sdk

import "math"

// Outside wasip1 there is no daemon: the package compiles so that a
// plugin's logic can be tested with go test. A host function called
// outside Call is a programming error.
var polar Host = noHost{}

type noHost struct{}

const noHostMsg = "sdk: no polar host outside GOOS=wasip1 (outside sdk.Call)"

func (noHost) Emit([]byte) int32         { panic(noHostMsg) }
func (noHost) Log(Level, string)         { panic(noHostMsg) }
func (noHost) SetState([]byte) int32     { panic(noHostMsg) }
func (noHost) HTTPRequest([]byte) int32  { panic(noHostMsg) }
func (noHost) HTTPResponse([]byte) int32 { panic(noHostMsg) }

// Call runs one call of the registered handler as the daemon would
// (polar_alloc, the encoded ObserveRequest copied into the buffer,
// polar_observe) with host standing for the daemon's host functions, and
// returns what polar_observe returned (see "Results of polar_observe").
// It exists outside GOOS=wasip1 only, for tests on the development
// machine: of a plugin against a fake target, and of the SDK against a
// host's own encoding (the daemon's tests check the SDK's with it).
// Calls must not overlap: the handler and the host are the package's.
func Call(host Host, request []byte) int32 {
	prev := polar
	polar = host
	defer func() { polar = prev }()
	// A size polar_alloc refuses gives 0, which polar_observe then refuses
	// as no buffer of its own, as in the guest.
	n := int32(min(len(request), math.MaxInt32))
	p := alloc(n)
	copy(pinned[p], request)
	return observe(p, n)
}

// Stateless returns what polar_stateless returns to the daemon: 1 when
// the plugin registered its handler with HandleStateless. Outside
// GOOS=wasip1 only, for tests.
func Stateless() int32 { return statelessResult() }
