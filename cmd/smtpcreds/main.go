// Command smtpcreds is the smtpcreds server and its operator CLI. It parses
// configuration once, has internal/app build the server from it, and owns
// the process.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Stamped by `make build` with -ldflags.
var (
	version = "dev"
	commit  = "unknown"
)

const usage = `usage: smtpcreds <command> [flags]

commands:
  serve                              run the HTTP API
  migrate                            apply database migrations to DATABASE_URL
  accounts create NAME               create an account; prints its API token
  accounts rotate-token NAME         replace an account's API token; prints it
  domains add NAME DOMAIN [--verified]
                                     attach a sending domain to an account
  dev                                local demo: embedded PostgreSQL under ./.data,
                                     migrate, demo account and domain, serve
  version                            print version and commit

Run 'smtpcreds <command> -h' for flags; every flag can also be set through
the environment variable named in its help (SMTPCREDS_*, DATABASE_URL).`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the exit code: 0 success, 1 failure,
// 2 bad command-line input (reported on one line).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, getenv, stdout, stderr)
	var (
		ue usageError
		ht helpText
	)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprintln(stdout, usage)
		return 0
	case errors.As(err, &ht):
		fmt.Fprint(stdout, string(ht))
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "smtpcreds: "+ue.msg)
		return 2
	default:
		fmt.Fprintln(stderr, "smtpcreds: "+err.Error())
		return 1
	}
}

var errHelp = errors.New("help")

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("missing command (try 'smtpcreds help')")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		return errHelp
	case "version":
		fmt.Fprintf(stdout, "smtpcreds %s (commit %s)\n", version, commit)
		return nil
	case "migrate":
		return cmdMigrate(ctx, rest, getenv, stdout)
	case "serve":
		return cmdServe(ctx, rest, getenv, stderr)
	case "dev":
		return cmdDev(ctx, rest, getenv, stdout, stderr)
	case "accounts":
		if len(rest) == 0 {
			return usagef("accounts: missing subcommand (create NAME or rotate-token NAME)")
		}
		switch rest[0] {
		case "create":
			return cmdAccountsCreate(ctx, rest[1:], getenv, stdout)
		case "rotate-token":
			return cmdAccountsRotate(ctx, rest[1:], getenv, stdout)
		}
		return usagef("accounts: unknown subcommand %q (create NAME or rotate-token NAME)", rest[0])
	case "domains":
		if len(rest) == 0 || rest[0] != "add" {
			return usagef("domains: want 'domains add NAME DOMAIN [--verified]'")
		}
		return cmdDomainsAdd(ctx, rest[1:], getenv, stdout)
	}
	return usagef("unknown command %q (try 'smtpcreds help')", cmd)
}
