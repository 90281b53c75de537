// gomodzip turns a checkout of a Go module into the module zip the Go module proxy
// would serve, and prints its h1: hash (the one go.sum records).
//
// It exists for one case: a module version the proxy refuses (403) although its
// source is public, as livekit/protocol's pseudo-version pinned by lk v2.18.2.
// bench/tools/provide-go-module compares the printed hash with the consumer's
// go.sum, so the zip is provably the same source, and serves it from a file proxy.
//
//	go run . DIR MODULE VERSION OUT.zip
package main

import (
	"fmt"
	"os"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: gomodzip DIR MODULE VERSION OUT.zip")
		os.Exit(2)
	}
	dir, path, version, out := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	f, err := os.Create(out)
	if err != nil {
		fail(err)
	}
	if err := modzip.CreateFromDir(f, module.Version{Path: path, Version: version}, dir); err != nil {
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
	hash, err := dirhash.HashZip(out, dirhash.Hash1)
	if err != nil {
		fail(err)
	}
	fmt.Println(hash)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gomodzip:", err)
	os.Exit(1)
}
