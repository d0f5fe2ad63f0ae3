// Package guest is the raw ABI v1, written by hand for the host's test
// plugins: the imports, polar_alloc, and just enough protobuf (protowire)
// to read an ObserveRequest and write PluginObservations and HttpRequests.
// It deliberately does not use wasm/sdk, so that the host is tested
// against the ABI as written, not against one implementation of it.
package guest

import (
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

//go:wasmimport polar emit
func emit(ptr unsafe.Pointer, n int32) int32

//go:wasmimport polar log
func log(level int32, ptr unsafe.Pointer, n int32)

//go:wasmimport polar set_state
func setState(ptr unsafe.Pointer, n int32) int32

//go:wasmimport polar http_request
func httpRequest(ptr unsafe.Pointer, n int32) int32

//go:wasmimport polar http_response
func httpResponse(ptr unsafe.Pointer, n int32) int32

// alloced keeps the buffer handed to the host alive until the next call.
var alloced []byte

//go:wasmexport polar_alloc
func alloc(size int32) int32 {
	alloced = make([]byte, size)
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(alloced))))
}

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

// Request is the part of an ObserveRequest the test plugins use.
type Request struct {
	Observer   string
	TargetName string
	TargetURL  string
	Config     []byte
	Seconds    int64
	State      []byte
}

// ParseRequest decodes the ObserveRequest the host wrote at p, which is
// the buffer polar_alloc returned last.
func ParseRequest(p, n int32) Request {
	var r Request
	if p != int32(uintptr(ptr(alloced))) || int(n) > len(alloced) {
		return r
	}
	b := alloced[:n]
	fields(b, func(num protowire.Number, v []byte, x uint64) {
		switch num {
		case 1:
			r.Observer = string(v)
		case 2:
			fields(v, func(num protowire.Number, v []byte, _ uint64) {
				switch num {
				case 1:
					r.TargetName = string(v)
				case 2:
					r.TargetURL = string(v)
				}
			})
		case 3:
			r.Config = append([]byte(nil), v...)
		case 4:
			fields(v, func(num protowire.Number, _ []byte, x uint64) {
				if num == 1 {
					r.Seconds = int64(x)
				}
			})
		case 5:
			r.State = append([]byte(nil), v...)
		}
	})
	return r
}

// fields calls f for each field of message b: v for length-delimited
// fields, x for varints.
func fields(b []byte, f func(num protowire.Number, v []byte, x uint64)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return
			}
			f(num, v, 0)
			b = b[n:]
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return
			}
			f(num, nil, x)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return
			}
			b = b[n:]
		}
	}
}

func appendMap(b []byte, num protowire.Number, m map[string]string) []byte {
	for k, v := range m {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, v)
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// Observation encodes a PluginObservation.
func Observation(suffix string, severity int, payload []byte, labels map[string]string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, suffix)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(severity))
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, payload)
	return appendMap(b, 6, labels)
}

// Emit passes raw bytes to emit and returns its result.
func Emit(b []byte) int32 { return emit(ptr(b), int32(len(b))) }

// Log logs s at level.
func Log(level int32, s string) {
	b := []byte(s)
	log(level, ptr(b), int32(len(b)))
}

// SetState passes b to set_state and returns its result.
func SetState(b []byte) int32 { return setState(ptr(b), int32(len(b))) }

// Response is the part of an HttpResponse the test plugins use.
type Response struct {
	Status    int
	Body      []byte
	Truncated bool
	Values    map[string]string
}

// HTTP makes one request with http_request and, when it succeeds, fetches
// the response with http_response. code is the result of http_request, or
// of http_response when that failed.
// extract, when set, is HttpRequest.extract.
func HTTP(method, url string, extract ...string) (code int32, resp Response) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, method)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, url)
	for _, p := range extract {
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendString(b, p)
	}
	n := httpRequest(ptr(b), int32(len(b)))
	if n < 0 {
		return n, resp
	}
	// A short buffer first, to see -2 and that the response stays pending
	// (an encoded response is never shorter than 2 bytes).
	if c := httpResponse(ptr(make([]byte, 1)), 1); c != -2 {
		return c, resp
	}
	buf := make([]byte, n)
	if c := httpResponse(ptr(buf), n); c != n {
		return c, resp
	}
	fields(buf, func(num protowire.Number, v []byte, x uint64) {
		switch num {
		case 1:
			resp.Status = int(x)
		case 3:
			resp.Body = append([]byte(nil), v...)
		case 4:
			resp.Truncated = x != 0
		case 5:
			if resp.Values == nil {
				resp.Values = map[string]string{}
			}
			var k, val string
			fields(v, func(num protowire.Number, v []byte, _ uint64) {
				if num == 1 {
					k = string(v)
				} else if num == 2 {
					val = string(v)
				}
			})
			resp.Values[k] = val
		}
	})
	return n, resp
}
