// Command raw-abi is an observer plugin written against ABI v1 directly,
// without wasm/sdk and without a protobuf library, to show what a plugin in
// any language has to do: abi_wasip1.go holds the exports and the imports,
// this file the hand-rolled encoding of the one PluginObservation it emits.
// README.md walks through it.
package main

// main is never called: the module is a reactor. Outside wasip1 it lets the
// package build, so that go test checks the encoding.
func main() {}

// The observation emitted on every call.
const (
	typeSuffix = "raw"
	severity   = 1 // SEVERITY_INFO
	payload    = `{"hello":"from the raw ABI"}`
	schema     = "application/json"
	labelKey   = "example"
	labelValue = "raw-abi"
)

// observation encodes the observation as a PluginObservation by the
// protobuf wire format's rules: each field is a tag (field number << 3 |
// wire type) and its value, a varint (wire type 0) or a length-prefixed
// byte string (wire type 2); a map<string, string> is a repeated message
// {1: key, 2: value}.
func observation() []byte {
	var b []byte
	b = appendBytesField(b, 1, []byte(typeSuffix)) // type_suffix
	b = appendVarintField(b, 2, severity)          // severity
	b = appendBytesField(b, 4, []byte(payload))    // payload
	b = appendBytesField(b, 5, []byte(schema))     // schema
	var entry []byte
	entry = appendBytesField(entry, 1, []byte(labelKey))
	entry = appendBytesField(entry, 2, []byte(labelValue))
	return appendBytesField(b, 6, entry) // labels
}

// appendVarintField appends field num with wire type 0, whose tag is
// therefore num << 3.
func appendVarintField(b []byte, num, x uint64) []byte {
	return appendVarint(appendVarint(b, num<<3), x)
}

// appendBytesField appends field num with wire type 2.
func appendBytesField(b []byte, num uint64, v []byte) []byte {
	b = appendVarint(b, num<<3|2)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendVarint appends x in base 128, least significant group first, the
// high bit set on every byte but the last.
func appendVarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}
