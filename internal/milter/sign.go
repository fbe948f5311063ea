package milter

import (
	"crypto"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// signedHeaders are the fields a signature covers when present (RFC 6376
// 5.4.1's list); oversigned ones are also listed once more than they
// occur, so that a field of that name added on the way breaks the
// signature instead of changing what a reader sees.
var (
	signedHeaders = []string{
		"From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc",
		"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
		"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
		"In-Reply-To", "References", "List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe",
		"List-Post", "List-Owner", "List-Archive", "List-Unsubscribe-Post",
	}
	oversigned = map[string]bool{
		"from": true, "sender": true, "reply-to": true, "subject": true, "date": true,
		"message-id": true, "to": true, "cc": true, "mime-version": true, "content-type": true,
		"content-transfer-encoding": true, "list-unsubscribe": true, "list-unsubscribe-post": true,
	}
)

// signing is the message's signatures in progress: the From: domain's,
// and its auth domain's where that is set up and verified.
type signing struct {
	signers []*dkim.Signer
}

// startSigning starts the signatures d's keys make, fed the header fields
// now; nil when d has no key (or is not verified). The body follows
// through write.
func startSigning(d *domain, headers []field) (*signing, error) {
	if d == nil || !d.found || !d.Verified || !d.Active {
		return nil, nil
	}
	keys := headerKeys(headers)
	s := &signing{}
	add := func(domain, selector string, key crypto.Signer) error {
		sg, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: domain, Selector: selector, Signer: key, Hash: crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             keys,
		})
		if err != nil {
			return fmt.Errorf("dkim signer for %s: %w", domain, err)
		}
		s.signers = append(s.signers, sg)
		return nil
	}
	if d.Key != nil && d.Selector != "" {
		if err := add(d.Name, d.Selector, d.Key); err != nil {
			return nil, err
		}
	}
	if d.AuthKey != nil && d.AuthSelector != "" {
		if err := add(d.AuthDomain, d.AuthSelector, d.AuthKey); err != nil {
			s.abort()
			return nil, err
		}
	}
	if len(s.signers) == 0 {
		return nil, nil
	}
	var b strings.Builder
	for _, f := range headers {
		b.WriteString(f.name)
		b.WriteString(":")
		b.WriteString(crlf(f.value))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	if err := s.write([]byte(b.String())); err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

// headerKeys lists the signed fields the message has, each as often as it
// occurs, plus one more for the oversigned ones.
func headerKeys(headers []field) []string {
	n := map[string]int{}
	for _, f := range headers {
		n[strings.ToLower(f.name)]++
	}
	var keys []string
	for _, k := range signedHeaders {
		c := n[strings.ToLower(k)]
		if oversigned[strings.ToLower(k)] {
			c++
		}
		for range c {
			keys = append(keys, k)
		}
	}
	return keys
}

func (s *signing) write(p []byte) error {
	for _, sg := range s.signers {
		if _, err := sg.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// finish returns the DKIM-Signature field values, unfolded (one line each).
func (s *signing) finish() ([]string, error) {
	var out []string
	var first error
	for _, sg := range s.signers {
		if err := sg.Close(); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		v := strings.TrimPrefix(sg.Signature(), "DKIM-Signature:")
		out = append(out, strings.TrimSpace(strings.NewReplacer("\r\n", "", "\n", "").Replace(v)))
	}
	if first != nil {
		return nil, first
	}
	return out, nil
}

// abort releases the signers of a message that ends unsigned.
func (s *signing) abort() {
	for _, sg := range s.signers {
		_ = sg.Close() //nolint:errcheck // discarded
	}
}

// crlf makes a header value's line ends CRLF, as on the wire.
func crlf(v string) string {
	if !strings.Contains(v, "\n") {
		return v
	}
	return strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", "\n"), "\n", "\r\n")
}
