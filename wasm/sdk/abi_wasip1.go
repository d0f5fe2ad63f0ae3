package sdk

import "unsafe"

// The module's side of ABI v1 under GOOS=wasip1: its exports, and the host
// functions of the "polar" import module.

//go:wasmexport polar_abi_version
//lint:ignore U1000 called by the host
func polarABIVersion() int32 { return ABIVersion }

//go:wasmexport polar_stateless
//lint:ignore U1000 called by the host
func polarStateless() int32 { return statelessResult() }

//go:wasmexport polar_alloc
//lint:ignore U1000 called by the host
func polarAlloc(size int32) uint32 { return uint32(alloc(size)) }

//go:wasmexport polar_observe
//lint:ignore U1000 called by the host
func polarObserve(ptr uint32, size int32) int32 { return observe(uintptr(ptr), size) }

//go:wasmimport polar emit
func hostEmit(ptr unsafe.Pointer, size uint32) int32

//go:wasmimport polar log
func hostLog(level int32, msg string)

//go:wasmimport polar set_state
func hostSetState(ptr unsafe.Pointer, size uint32) int32

//go:wasmimport polar http_request
func hostHTTPRequest(ptr unsafe.Pointer, size uint32) int32

//go:wasmimport polar http_response
func hostHTTPResponse(ptr unsafe.Pointer, size uint32) int32

var polar Host = wasmHost{}

// wasmHost passes Go memory to the imports. The host reads or writes it
// only during the call, and the slice arguments keep it alive until then.
type wasmHost struct{}

func (wasmHost) Emit(b []byte) int32         { return hostEmit(ptr(b), uint32(len(b))) }
func (wasmHost) Log(level Level, msg string) { hostLog(int32(level), msg) }
func (wasmHost) SetState(b []byte) int32     { return hostSetState(ptr(b), uint32(len(b))) }
func (wasmHost) HTTPRequest(b []byte) int32  { return hostHTTPRequest(ptr(b), uint32(len(b))) }
func (wasmHost) HTTPResponse(b []byte) int32 { return hostHTTPResponse(ptr(b), uint32(len(b))) }

// ptr is b's address; it may be nil when b is empty, which is fine since
// the host accesses no byte of a buffer of length 0.
func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
