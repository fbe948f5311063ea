package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// lookup runs f with a context bounded by timeout and returns no later than
// the deadline even if f does not honour its context.
func lookup[T any](ctx context.Context, timeout time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1) // buffered: f may finish after we gave up
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	select {
	case res := <-done:
		return res.v, res.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// explain turns a lookup error into a Problem. parent is the caller's
// context, used to tell our own timeout from the caller's cancellation.
func (c *Checker) explain(parent context.Context, err error, typ, name string) string {
	if errors.Is(parent.Err(), context.Canceled) {
		return fmt.Sprintf("DNS lookup of %s %s canceled", typ, name)
	}
	timeout := fmt.Sprintf("DNS lookup timed out after %v (%s)", c.timeout, c.label)
	if d, ok := parent.Deadline(); ok && !time.Now().Before(d) {
		// The caller's deadline, not ours, ended the lookup. (The
		// resolver's socket deadline can fire a moment before the
		// context reports it, so compare times rather than parent.Err.)
		timeout = fmt.Sprintf("DNS lookup timed out: the request's deadline passed first (%s)", c.label)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return timeout
	}
	dnsErr, ok := errors.AsType[*net.DNSError](err)
	if !ok {
		return fmt.Sprintf("DNS lookup of %s %s failed: %s (%s)", typ, name, snippet(err.Error()), c.label)
	}
	switch {
	case dnsErr.IsNotFound:
		// NXDOMAIN and NODATA look the same through net.Resolver.
		return fmt.Sprintf("no %s record at %s", typ, name)
	case dnsErr.IsTimeout:
		return timeout
	case strings.Contains(dnsErr.Err, "connection refused"):
		return fmt.Sprintf("could not reach the DNS %s: connection refused (no DNS server is listening there)", c.label)
	case dnsErr.Err == "server misbehaving" && dnsErr.IsTemporary:
		return fmt.Sprintf("the DNS server answered SERVFAIL (server failure) for %s %s (%s); the domain's nameservers may be down or misconfigured, or DNSSEC validation failed", typ, name, c.label)
	case dnsErr.Err == "server misbehaving":
		return fmt.Sprintf("the DNS server refused to answer or returned an error for %s %s (%s)", typ, name, c.label)
	case dnsErr.Err == "lame referral":
		return fmt.Sprintf("the DNS server gave no answer for %s %s (lame referral: it is neither authoritative nor recursive) (%s)", typ, name, c.label)
	default:
		return fmt.Sprintf("DNS lookup of %s %s failed: %s (%s)", typ, name, snippet(dnsErr.Err), c.label)
	}
}
