package wal

import (
	"hash/crc32"
	"runtime"
)

func runtimeGosched() { runtime.Gosched() }

func crcOf(lenBytes, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, lenBytes), castagnoli, payload)
}
