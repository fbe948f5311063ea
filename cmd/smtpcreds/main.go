// Command smtpcreds is the smtpcreds server and its operator CLI. It parses
// configuration once, has internal/app build the server from it, and owns
// the process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Stamped by `make build` with -ldflags.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
