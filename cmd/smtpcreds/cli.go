package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"github.com/alecthomas/kong"
)

// cli is the command tree. Each command embeds the flag groups (config.go)
// it uses, so that its help lists only its own flags, with their types,
// environment variables and defaults.
type cli struct {
	Version versionFlag `help:"Print version and commit, then exit."`

	Serve       serveCmd       `cmd:"" help:"Run the HTTP API (refuses to start while migrations are pending)."`
	Milter      milterCmd      `cmd:"" help:"Run the milter Postfix passes authenticated mail through: sender policy, DKIM signing, sending limits, message log."`
	Migrate     migrateCmd     `cmd:"" help:"Apply the embedded migrations to DATABASE_URL."`
	Accounts    accountsCmd    `cmd:"" help:"Create, list and re-key accounts (API tenants)."`
	Domains     domainsCmd     `cmd:"" help:"Attach, list, verify sending domains, or mark them verified."`
	Credentials credentialsCmd `cmd:"" help:"List a domain's SMTP credentials, or import existing ones from a Dovecot passwd-file or CSV."`
	Dev         devCmd         `cmd:"" help:"What make run runs: local PostgreSQL under --data-dir, migrate, demo account and domain, serve."`
	VersionCmd  versionCmd     `cmd:"" name:"version" help:"Print version and commit."`
}

type accountsCmd struct {
	Create      accountsCreateCmd `cmd:"" help:"Create an account; print its API token alone on one line."`
	RotateToken accountsRotateCmd `cmd:"" help:"Replace an account's API token and print it; the old one stops working at once."`
	List        accountsListCmd   `cmd:"" help:"List accounts: name, id, created, number of domains."`
}

type domainsCmd struct {
	Add         domainsAddCmd         `cmd:"" help:"Attach a sending domain to an account, with a fresh DKIM key; print its name."`
	List        domainsListCmd        `cmd:"" help:"List domains (of one account, or all): verified and by whom, DKIM/SPF/MX state, created."`
	Verify      domainsVerifyCmd      `cmd:"" help:"Run the DNS checks of the API's verify-mandatory on a domain; print each record's result and why."`
	SetVerified domainsSetVerifiedCmd `cmd:"" help:"Mark a domain verified (true) or withdraw that mark (false): an operator override that DNS checks report but do not undo."`
}

type credentialsCmd struct {
	List   credentialsListCmd   `cmd:"" help:"List a domain's credentials: login, guid, active, synced, created."`
	Import credentialsImportCmd `cmd:"" help:"Import the logins of a Dovecot passwd-file or CSV with their hashes (the passwords keep working); refused lines on stderr, counts on stdout, exit 1 if any line was refused."`
}

const description = `smtpcreds is the smtpcreds API server and its operator CLI.

Every flag can also be set through the environment variable shown in its help; a flag wins over its variable. Run 'smtpcreds <command> --help' for a command's flags.

Exit codes: 0 success, 1 failure, 2 bad usage (the error is one line on stderr).`

// flagGroups titles the flag groups in help, in this order.
var flagGroups = []kong.Group{
	{Key: "database", Title: "Database:"},
	{Key: "keys", Title: "Keys (keep them outside the database):"},
	{Key: "dns", Title: "DNS records and checks:"},
	{Key: "server", Title: "HTTP API:"},
	{Key: "sync", Title: "Keeping the SMTP server in sync:"},
	{Key: "log", Title: "Logging:"},
	{Key: "dev", Title: "dev:"},
}

// runEnv is what every command's Run gets: the process, as run was called.
type runEnv struct {
	ctx            context.Context
	getenv         func(string) string
	stdout, stderr io.Writer
}

// versionFlag is --version.
type versionFlag bool

// BeforeReset prints the version before any other flag is checked, then
// ends the run with exit code 0.
func (versionFlag) BeforeReset(k *kong.Kong) error {
	fmt.Fprintln(k.Stdout, versionLine())
	k.Exit(0)
	return nil
}

type versionCmd struct{}

func (versionCmd) Run(r *runEnv) error {
	fmt.Fprintln(r.stdout, versionLine())
	return nil
}

func versionLine() string { return fmt.Sprintf("smtpcreds %s (commit %s)", version, commit) }

// exitRequest is kong's request to end the run (after --help or
// --version), carried to run by a panic because kong expects Exit not to
// return.
type exitRequest int

// newParser builds the command line parser over the environment getenv
// and the writers. Kong reads flag defaults from the process environment
// itself; the parser clears the variables from the model after building it
// and resolves them through getenv instead, so that run sees one
// environment (tests pass their own). envOf, returned, keeps each flag's
// variable for help, the resolver and the README's table.
func newParser(root *cli, getenv func(string) string, stdout, stderr io.Writer) (*kong.Kong, map[string]string, error) {
	envOf := map[string]string{}
	k, err := kong.New(root,
		kong.Name("smtpcreds"),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitRequest(code)) }),
		kong.ExplicitGroups(flagGroups),
		kong.ConfigureHelp(kong.HelpOptions{WrapUpperBound: 100}),
		kong.ValueFormatter(func(v *kong.Value) string { return helpLine(v, envOf[v.Name]) }),
		kong.Resolvers(kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, f *kong.Flag) (any, error) {
			return resolveEnv(f, envOf[f.Name], getenv)
		})),
		kong.PostBuild(func(k *kong.Kong) error {
			walkFlags(k.Model.Node, func(f *kong.Flag) {
				if len(f.Tag.Envs) > 0 {
					envOf[f.Name] = f.Tag.Envs[0]
					f.Tag.Envs = nil
				}
				if f.PlaceHolder == "" && !f.IsBool() {
					f.PlaceHolder = typeName(f.Target.Type())
				}
			})
			return nil
		}),
	)
	return k, envOf, err
}

// walkFlags calls fn on every flag of n and its descendants.
func walkFlags(n *kong.Node, fn func(*kong.Flag)) {
	for _, f := range n.Flags {
		fn(f)
	}
	for _, c := range n.Children {
		walkFlags(c, fn)
	}
}

// typeName is the placeholder of a flag without one: its type.
func typeName(t reflect.Type) string {
	if t.String() == "time.Duration" {
		return "DURATION"
	}
	return strings.ToUpper(t.Kind().String())
}

// resolveEnv is the value of f from its environment variable env, or nil
// when the variable is unset or empty. A value that does not parse is an
// error naming the variable (not the value, which may be a secret).
func resolveEnv(f *kong.Flag, env string, getenv func(string) string) (any, error) {
	if env == "" {
		return nil, nil
	}
	v := getenv(env)
	if v == "" {
		return nil, nil
	}
	scratch := reflect.New(f.Target.Type()).Elem()
	if err := f.Parse(kong.ScanFromTokens(kong.Token{Type: kong.FlagValueToken, Value: v}), scratch); err != nil {
		return nil, fmt.Errorf("from %s: %s", env, strings.TrimPrefix(err.Error(), "--"+f.Name+": "))
	}
	return v, nil
}

// codeSpan is the {x} mark of code in help texts (see config.go).
var codeSpan = regexp.MustCompile(`\{([^{}]*)\}`)

// helpLine is a flag's help in the terminal: the text, its variable and
// its default.
func helpLine(v *kong.Value, env string) string {
	h := codeSpan.ReplaceAllString(v.Help, "$1")
	var notes []string
	if env != "" {
		notes = append(notes, "$"+env)
	}
	if d := defaultDoc(v); d != "" {
		notes = append(notes, "default: "+codeSpan.ReplaceAllString(d, "$1"))
	}
	if len(notes) > 0 {
		h += " (" + strings.Join(notes, "; ") + ")"
	}
	return h
}

// defaultDoc is a flag's default as documented: its docdefault tag, else
// its literal default; "" when it has neither.
func defaultDoc(v *kong.Value) string {
	if d := v.Tag.Get("docdefault"); d != "" {
		return d
	}
	if v.HasDefault {
		return v.Default
	}
	return ""
}

// singleDash is a long flag written with one dash, as Go's flag package
// accepted (-database-url=...).
var singleDash = regexp.MustCompile(`^-[a-z][a-z0-9-]+(=.*)?$`)

// normalizeArgs keeps the command lines of earlier versions working: a
// long flag may be written with one dash, and `help [COMMAND...]` is
// `COMMAND... --help`.
func normalizeArgs(args []string) []string {
	out := make([]string, 0, len(args)+1)
	for i, a := range args {
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		if singleDash.MatchString(a) {
			a = "-" + a
		}
		out = append(out, a)
	}
	if len(out) > 0 && out[0] == "help" {
		out = append(out[1:], "--help")
	}
	return out
}

// run executes one command and returns the exit code: 0 success, 1 failure,
// 2 bad command-line input (reported on one line).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (code int) {
	fail := func(c int, msg string) int {
		fmt.Fprintln(stderr, "smtpcreds: "+strings.ReplaceAll(strings.TrimSpace(msg), "\n", "; "))
		return c
	}
	if len(args) == 0 {
		return fail(2, "missing command (try 'smtpcreds --help')")
	}
	defer func() {
		if r := recover(); r != nil {
			ex, ok := r.(exitRequest)
			if !ok {
				panic(r)
			}
			code = int(ex)
		}
	}()
	var root cli
	parser, _, err := newParser(&root, getenv, stdout, stderr)
	if err != nil {
		return fail(1, err.Error()) // a broken command tree: a bug, caught by the tests
	}
	kctx, err := parser.Parse(normalizeArgs(args))
	if err != nil {
		msg := err.Error()
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			if n := pe.Context.Selected(); n != nil {
				msg += " (see '" + n.FullPath() + " --help')"
			} else {
				msg += " (see 'smtpcreds --help')"
			}
		}
		return fail(2, msg)
	}
	err = kctx.Run(&runEnv{ctx: ctx, getenv: getenv, stdout: stdout, stderr: stderr})
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return fail(2, ue.msg)
	default:
		return fail(1, err.Error())
	}
}
