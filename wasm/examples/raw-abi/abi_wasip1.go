package main

import (
	"strconv"
	"unsafe"
)

// request is the buffer polar_alloc handed out last, at requestAddr. The
// host writes the ObserveRequest into it after polar_alloc returns and never
// frees it: referencing it here keeps Go's garbage collector from reclaiming
// it before polar_observe has read it.
var (
	request     []byte
	requestAddr uint32
)

//go:wasmexport polar_abi_version
//lint:ignore U1000 called by the host
func abiVersion() int32 { return 1 }

//go:wasmexport polar_alloc
//lint:ignore U1000 called by the host
func alloc(size int32) uint32 {
	if size < 0 {
		return 0 // the ABI's failure
	}
	// One byte more, so that an empty request still has an address.
	request = make([]byte, size, size+1)
	requestAddr = uint32(uintptr(unsafe.Pointer(unsafe.SliceData(request[:1]))))
	return requestAddr
}

//go:wasmexport polar_observe
//lint:ignore U1000 called by the host
func observe(ptr uint32, size int32) int32 {
	if request == nil || ptr != requestAddr || size < 0 || int(size) > len(request) {
		log(3, "raw-abi: polar_observe was not given the buffer of polar_alloc")
		return 1
	}
	// This plugin does not need the request; a real one would decode it
	// here (fields: 1 observer, 2 target {1 name, 2 url}, 3 config_json,
	// 4 time, 5 state).
	request = nil // read: ordinary garbage from now on
	b := observation()
	if rc := emit(unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b))); rc != 0 {
		log(3, "raw-abi: emit: result "+strconv.Itoa(int(rc)))
		return 1
	}
	log(1, "raw-abi: emitted one observation for a request of "+strconv.Itoa(int(size))+" bytes")
	return 0
}

// emit passes the host a PluginObservation, which it copies during the call.
//
//go:wasmimport polar emit
func emit(ptr unsafe.Pointer, size uint32) int32

// log writes a line to the daemon's log; a string parameter is passed as
// its pointer and length, which is the ABI's (ptr, len).
//
//go:wasmimport polar log
func log(level int32, msg string)
