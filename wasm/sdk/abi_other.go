//go:build !wasip1

package sdk

// Outside wasip1 there is no host: the package compiles so that a plugin's
// logic can be tested with go test, and a host call is a programming error.
var polar host = noHost{}

type noHost struct{}

const noHostMsg = "sdk: no polar host outside GOOS=wasip1"

func (noHost) emit([]byte) int32         { panic(noHostMsg) }
func (noHost) log(Level, string)         { panic(noHostMsg) }
func (noHost) setState([]byte) int32     { panic(noHostMsg) }
func (noHost) httpRequest([]byte) int32  { panic(noHostMsg) }
func (noHost) httpResponse([]byte) int32 { panic(noHostMsg) }
