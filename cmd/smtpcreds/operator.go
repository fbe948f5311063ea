package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/accounts"
	"github.com/smtpcreds/smtpcreds/internal/credentials"
	"github.com/smtpcreds/smtpcreds/internal/dnscheck"
	"github.com/smtpcreds/smtpcreds/internal/domains"
)

// The operator's read and verify commands. They print tables for people
// (tab-aligned, one header line, times in UTC, RFC 3339), and need neither
// a token key nor a DKIM key: they read, check DNS and mark, nothing else.

// withDB opens the database of groups' config for fn.
func withDB(ctx context.Context, fn func(config, *sqlx.DB) error, groups ...group) error {
	c, err := buildConfig(groups...)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(c, db)
}

// operatorDomains is the domains service of the commands that neither make
// DKIM keys nor sync: it needs no DKIM key. Its DNS checks are the
// server's (the same dnscheck.Checker and records configuration).
func operatorDomains(c config, db *sqlx.DB) (*domains.Service, error) {
	checker, err := dnscheck.New(dnscheck.Config{Resolver: c.DNS.Resolver, Timeout: c.DNS.Timeout})
	if err != nil {
		return nil, usagef("invalid --dns-resolver: %v", err)
	}
	return domains.NewService(db, nil, checker, nil, domains.Config{
		Selector: c.DNS.Selector, SPFInclude: c.DNS.SPFInclude, MXHost: c.DNS.MXHost, TrackingTarget: c.DNS.TrackingTarget,
	}), nil
}

// table writes tab-separated rows aligned in columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func timeCell(t time.Time) string { return t.UTC().Format(time.RFC3339) }

type accountsListCmd struct{ dbFlags }

func (a *accountsListCmd) Run(r *runEnv) error {
	return withDB(r.ctx, func(_ config, db *sqlx.DB) error {
		list, err := accounts.NewDirectory(db).List(r.ctx)
		if err != nil {
			return err
		}
		rows := make([][]string, len(list))
		for i, s := range list {
			rows[i] = []string{s.Name, fmt.Sprint(s.ID), timeCell(s.CreatedAt), fmt.Sprint(s.Domains)}
		}
		return table(r.stdout, "NAME\tID\tCREATED\tDOMAINS", rows)
	}, a.dbFlags)
}

type domainsListCmd struct {
	dbFlags
	Account string `arg:"" optional:"" help:"list only this account's domains"`
}

func (l *domainsListCmd) Run(r *runEnv) error {
	return withDB(r.ctx, func(c config, db *sqlx.DB) error {
		if l.Account != "" {
			if _, err := accounts.NewDirectory(db).ByName(r.ctx, l.Account); err != nil {
				return accountErr("domains list", err)
			}
		}
		dom, err := operatorDomains(c, db)
		if err != nil {
			return err
		}
		list, err := dom.ListAll(r.ctx, l.Account)
		if err != nil {
			return err
		}
		rows := make([][]string, len(list))
		for i, d := range list {
			rows[i] = []string{d.Name, d.Account, verifiedCell(d.Domain),
				checkCell(d.Domain, d.DKIMOK), checkCell(d.Domain, d.SPFOK), checkCell(d.Domain, d.MXOK), timeCell(d.CreatedAt)}
		}
		return table(r.stdout, "DOMAIN\tACCOUNT\tVERIFIED\tDKIM\tSPF\tMX\tCREATED", rows)
	}, l.dbFlags)
}

// verifiedCell is "yes (dns)", "yes (operator)" or "no".
func verifiedCell(d domains.Domain) string {
	switch {
	case !d.Verified:
		return "no"
	case d.VerifiedBy == "":
		return "yes"
	default:
		return "yes (" + d.VerifiedBy + ")"
	}
}

// checkCell is a record's state after the last DNS check: ok, fail, or
// "-" before the first.
func checkCell(d domains.Domain, ok bool) string {
	switch {
	case d.CheckedAt == nil:
		return "-"
	case ok:
		return "ok"
	default:
		return "fail"
	}
}

type domainsVerifyCmd struct {
	dbFlags
	dnsRecordFlags
	dnsCheckFlags
	Domain string `arg:"" help:"the domain to check, whichever account owns it"`
}

// errNotVerified: the domain is not verified after its check (exit 1).
var errNotVerified = errors.New("not verified: DKIM and SPF must both pass")

func (v *domainsVerifyCmd) Run(r *runEnv) error {
	return withDB(r.ctx, func(c config, db *sqlx.DB) error {
		dom, err := operatorDomains(c, db)
		if err != nil {
			return err
		}
		d, out, err := dom.VerifyByName(r.ctx, v.Domain)
		if errors.Is(err, domains.ErrNotFound) {
			return usagef("domains verify: no domain %q", v.Domain)
		}
		if err != nil {
			return err
		}
		printVerification(r.stdout, d, out)
		if !d.Verified {
			return fmt.Errorf("%s is %w", d.Name, errNotVerified)
		}
		return nil
	}, v.dbFlags, v.dnsRecordFlags, v.dnsCheckFlags)
}

// printVerification writes the outcome of a check: the domain's state, then
// each record's result with what was expected, what DNS returned and why it
// failed.
func printVerification(w io.Writer, d domains.OwnedDomain, out domains.MandatoryOutcome) {
	state := "not verified"
	if d.Verified {
		state = "verified by " + d.VerifiedBy
	}
	fmt.Fprintf(w, "%s (account %s): %s\n", d.Name, d.Account, state)
	if d.VerifiedBy == domains.VerifiedByOperator && !(out.DKIM.OK && out.SPF.OK) {
		fmt.Fprintln(w, "  the operator's mark keeps it verified; DNS alone would not (withdraw the mark: smtpcreds domains set-verified "+d.Name+" false)")
	}
	for _, c := range []struct {
		key  string
		res  dnscheck.Result
		need string
	}{{"dkim", out.DKIM, "required"}, {"spf", out.SPF, "required"}, {"mx", out.MX, "reported, not required"}} {
		result := "FAIL"
		if c.res.OK {
			result = "ok"
		}
		fmt.Fprintf(w, "\n%s: %s (%s)\n", strings.ToUpper(c.key), result, c.need)
		fmt.Fprintf(w, "  looked up: %s %s\n", c.res.Type, c.res.Name)
		fmt.Fprintf(w, "  expected:  %s\n", c.res.Expected)
		if len(c.res.Found) == 0 {
			fmt.Fprintln(w, "  found:     nothing")
		}
		for i, f := range c.res.Found {
			label := "  found:     "
			if i > 0 {
				label = "             "
			}
			fmt.Fprintln(w, label+f)
		}
		if c.res.Problem != "" {
			fmt.Fprintf(w, "  problem:   %s\n", c.res.Problem)
		}
	}
}

type domainsSetVerifiedCmd struct {
	dbFlags
	Domain   string `arg:"" help:"the domain, whichever account owns it"`
	Verified string `arg:"" name:"true|false" enum:"true,false" help:"true: verified by the operator until withdrawn; false: withdraw, unverified until a DNS check passes"`
}

func (s *domainsSetVerifiedCmd) Run(r *runEnv) error {
	return withDB(r.ctx, func(c config, db *sqlx.DB) error {
		dom, err := operatorDomains(c, db)
		if err != nil {
			return err
		}
		d, err := dom.SetVerified(r.ctx, s.Domain, s.Verified == "true")
		if errors.Is(err, domains.ErrNotFound) {
			return usagef("domains set-verified: no domain %q", s.Domain)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "%s (account %s): verified %s\n", d.Name, d.Account, verifiedCell(d.Domain))
		return nil
	}, s.dbFlags)
}

type credentialsListCmd struct {
	dbFlags
	Account string `arg:"" help:"the account that owns the domain"`
	Domain  string `arg:"" help:"the domain whose credentials to list"`
}

// credentialsPage is how many credentials one query of the listing reads.
const credentialsPage = 1000

func (l *credentialsListCmd) Run(r *runEnv) error {
	return withDB(r.ctx, func(c config, db *sqlx.DB) error {
		acc, err := accounts.NewDirectory(db).ByName(r.ctx, l.Account)
		if err != nil {
			return accountErr("credentials list", err)
		}
		creds := credentials.NewService(db, nil, credentials.Config{})
		var rows [][]string
		for page := 1; ; page++ {
			p, err := creds.List(r.ctx, acc.ID, l.Domain, page, credentialsPage)
			if errors.Is(err, credentials.ErrDomainNotFound) {
				return usagef("credentials list: account %s has no domain %q", acc.Name, l.Domain)
			}
			if err != nil {
				return err
			}
			for _, cr := range p.Items {
				rows = append(rows, []string{cr.Login(), cr.GUID.String(), yesNo(cr.Active), yesNo(cr.RemoteSynced), timeCell(cr.CreatedAt)})
			}
			if int64(page)*credentialsPage >= p.Total {
				break
			}
		}
		return table(r.stdout, "LOGIN\tGUID\tACTIVE\tSYNCED\tCREATED", rows)
	}, l.dbFlags)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
