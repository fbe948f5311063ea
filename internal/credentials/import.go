package credentials

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/smtpcreds/smtpcreds/internal/hostname"
	"github.com/smtpcreds/smtpcreds/internal/password"
	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// Import formats.
const (
	// FormatAuto detects the format from the first line holding a login:
	// "login,hash" (a CSV header) or a ',' before any ':' is CSV, a ':'
	// first is a passwd-file.
	FormatAuto = "auto"
	// FormatPasswd is Dovecot's passwd-file: "login:{SCHEME}hash[:...]",
	// the fields after the second ignored.
	FormatPasswd = "passwd"
	// FormatCSV is "login,hash" lines, the hash optionally double-quoted
	// (an ARGON2ID hash holds commas: unquoted, everything after the first
	// comma is the hash), after an optional "login,hash" header.
	FormatCSV = "csv"
)

// ImportBatchSize is how many lines one transaction of an import adds.
const ImportBatchSize = 10000

// maxImportLine bounds a line of an import file; a longer one is refused.
const maxImportLine = 4096

// ImportOptions tunes Import.
type ImportOptions struct {
	// Format is FormatAuto (""), FormatPasswd or FormatCSV.
	Format string
	// IgnoreCap imports past the per-domain credential cap; without it,
	// lines that would take a domain past the cap are refused.
	IgnoreCap bool
	// BatchSize is the lines per transaction (0: ImportBatchSize).
	BatchSize int
	// Refused is called for each refused line, in line order, with why in
	// words; it never carries a password or a hash.
	Refused func(line int64, why string)
}

// ImportReport is what an import did.
type ImportReport struct {
	// Format is the format read (FormatPasswd or FormatCSV; FormatAuto
	// when the file held no line to detect it from).
	Format string
	// Read counts the lines holding a credential (not blank lines,
	// comments or a CSV header); each was created, skipped or refused.
	Read, Created, Skipped, Refused int64
	// Pending is the sync jobs of the created credentials, committed with
	// them: give it to the outbox's Apply to wait for the target.
	Pending syncer.Pending
}

// Import adds the credentials of a Dovecot passwd-file or CSV read from r
// to accountID's verified domains, with their hashes as they are (the
// passwords keep working), streamed in transactions of BatchSize lines:
// memory stays flat whatever the size of r. A login that exists is skipped,
// so an import can be run again. A line is refused, through opt.Refused,
// when it is malformed, its username breaks the API's rules, its domain is
// not a verified domain of the account, its login appeared on an earlier
// line, its hash is plaintext ({PLAIN}, {CLEAR}, {PLAIN-MD5}, ...) or of a
// scheme smtpcreds cannot serve, or, without opt.IgnoreCap, it would take
// its domain past the per-domain cap.
//
// The created credentials reach the sync target through the outbox: one
// job per scope per batch for a target that reads state (the passwd-file,
// which rewrites the scope) or the database (dovecot-sql), one per
// credential for a target replaying events (the webhook); committed with
// the batch, applied by the workers or by Apply(report.Pending).
//
// Errors: a read error of r or a database error stop the import; the
// batches committed before stay (running it again skips them).
func (s *Service) Import(ctx context.Context, accountID int64, r io.Reader, opt ImportOptions) (ImportReport, error) {
	rep := ImportReport{Format: opt.Format}
	switch opt.Format {
	case "", FormatAuto:
		rep.Format = FormatAuto
	case FormatPasswd, FormatCSV:
	default:
		return rep, fmt.Errorf("import: unknown format %q (want auto, passwd or csv)", opt.Format)
	}
	size := opt.BatchSize
	if size <= 0 {
		size = ImportBatchSize
	}
	refused := opt.Refused
	if refused == nil {
		refused = func(int64, string) {}
	}
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return rep, fmt.Errorf("import: %w", err)
	}
	defer conn.Close()
	var repo postgres.ImportRepo
	if err := repo.StartImport(ctx, conn); err != nil {
		return rep, err
	}
	// The tables are dropped even when ctx ended (the connection goes
	// back to the pool).
	defer repo.EndImport(context.WithoutCancel(ctx), conn) //nolint:errcheck // a failure closes nothing worse

	var limit int64
	if !opt.IgnoreCap {
		limit = int64(s.cfg.MaxPerDomain)
	}
	b := importBatch{}
	flush := func() error {
		if len(b.rows) == 0 && len(b.refused) == 0 {
			return nil
		}
		out, pending, err := s.importBatch(ctx, conn, accountID, b.rows, limit)
		if err != nil {
			return err
		}
		// A line refused for its hash may be a duplicate too: one reason
		// per line, the first found.
		seen := make(map[int64]bool, len(b.refused))
		for _, f := range b.refused {
			seen[f.line] = true
		}
		for _, f := range out.Refused {
			if !seen[f.Line] {
				b.refused = append(b.refused, lineRefusal{f.Line, s.refusalText(f)})
			}
		}
		slices.SortFunc(b.refused, func(x, y lineRefusal) int { return int(x.line - y.line) })
		for _, f := range b.refused {
			refused(f.line, f.why)
		}
		for _, n := range out.Created {
			rep.Created += n
		}
		rep.Skipped += out.Skipped
		rep.Refused += int64(len(b.refused))
		rep.Pending = rep.Pending.Merge(pending)
		b = importBatch{rows: b.rows[:0], refused: b.refused[:0]}
		return nil
	}

	br := bufio.NewReaderSize(r, 64<<10)
	var lineNo int64
	for {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, errLongLine) {
			return rep, fmt.Errorf("import: reading line %d: %w", lineNo+1, err)
		}
		lineNo++
		if err != nil { // errLongLine
			rep.Read++
			b.refused = append(b.refused, lineRefusal{lineNo, fmt.Sprintf("malformed: longer than %d bytes", maxImportLine)})
		} else if row, why, counts := parseImportLine(line, lineNo, &rep.Format); counts {
			rep.Read++
			if row.Hash == nil {
				b.refused = append(b.refused, lineRefusal{lineNo, why})
			}
			if row.Domain != "" { // kept for the duplicates, even refused
				b.rows = append(b.rows, row)
			}
		}
		if len(b.rows)+len(b.refused) >= size {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	return rep, flush()
}

type lineRefusal struct {
	line int64
	why  string
}

type importBatch struct {
	rows    []postgres.ImportRow
	refused []lineRefusal // found while parsing
}

// importBatch adds rows in one transaction on conn (the import's session),
// with their sync jobs.
func (s *Service) importBatch(ctx context.Context, conn *sqlx.Conn, accountID int64, rows []postgres.ImportRow, limit int64) (postgres.ImportOutcome, syncer.Pending, error) {
	var repo postgres.ImportRepo
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return postgres.ImportOutcome{}, syncer.Pending{}, fmt.Errorf("import: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	bulk := s.outbox.Bulk()
	var scopes map[string]string
	if bulk != nil && bulk.PerCredential {
		scopes = map[string]string{}
		for _, r := range rows {
			scopes[r.Domain] = s.outbox.Scope(r.Domain)
		}
	}
	out, err := repo.ImportBatch(ctx, tx, accountID, rows, limit, bulk, scopes)
	if err != nil {
		return out, syncer.Pending{}, fmt.Errorf("import: %w", err)
	}
	domains := make([]string, 0, len(out.Created))
	for d, n := range out.Created {
		if n > 0 {
			domains = append(domains, d)
		}
	}
	slices.Sort(domains)
	pending := s.outbox.Inserted(out.JobIDs, domains)
	if len(out.JobIDs) == 0 {
		if pending, err = s.outbox.EnqueueImported(ctx, tx, domains); err != nil {
			return out, syncer.Pending{}, fmt.Errorf("import: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return out, syncer.Pending{}, fmt.Errorf("import: commit: %w", err)
	}
	return out, pending, nil
}

var errLongLine = errors.New("line too long")

// readLine returns the next line without its end of line ("\n" or "\r\n"),
// nil and io.EOF at the end; errLongLine (the rest of the line skipped)
// for a line longer than maxImportLine.
func readLine(br *bufio.Reader) ([]byte, error) {
	chunk, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return []byte{}, errLongLine
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(chunk) == 0 {
		return nil, io.EOF
	}
	out := bytes.TrimSuffix(bytes.TrimSuffix(chunk, []byte("\n")), []byte("\r"))
	if len(out) > maxImportLine {
		return []byte{}, errLongLine
	}
	return out, nil
}

// parseImportLine reads one line in *format (detecting it when auto):
// counts is false for a blank line, a comment or the CSV header. A line
// that counts yields a row, or why it is refused: a row without a domain
// when the login could not be read, a row without a hash (kept, for the
// duplicates) when only the hash is refused.
func parseImportLine(raw []byte, lineNo int64, format *string) (row postgres.ImportRow, why string, counts bool) {
	line := strings.TrimSpace(string(raw))
	if lineNo == 1 {
		line = strings.TrimPrefix(line, "\ufeff")
	}
	if line == "" || line[0] == '#' {
		return row, "", false
	}
	if *format == FormatAuto {
		if strings.EqualFold(line, "login,hash") {
			*format = FormatCSV
			return row, "", false
		}
		switch i := strings.IndexAny(line, ":,"); {
		case i < 0:
			return row, "malformed: expected login:{SCHEME}hash or login,hash", true
		case line[i] == ':':
			*format = FormatPasswd
		default:
			*format = FormatCSV
		}
	}
	var login, hash string
	var ok bool
	if *format == FormatPasswd {
		login, hash, ok = strings.Cut(line, ":")
		hash, _, _ = strings.Cut(hash, ":")
		if !ok {
			return row, "malformed: expected login:{SCHEME}hash[:...]", true
		}
	} else {
		login, hash, ok = strings.Cut(line, ",")
		if !ok {
			return row, "malformed: expected login,hash", true
		}
		login, ok = unquote(strings.TrimSpace(login))
		if ok {
			hash, ok = unquote(strings.TrimSpace(hash))
		}
		if !ok {
			return row, "malformed: unbalanced double quotes", true
		}
	}
	login, hash = strings.TrimSpace(login), strings.TrimSpace(hash)
	local, domain, ok := cutLast(login, "@")
	if !ok {
		return row, "malformed: the login has no @domain", true
	}
	name, ok := NormalizeUsername(local)
	if !ok {
		return row, "bad username: " + usernameRule, true
	}
	dom, err := hostname.Normalize(domain)
	if err != nil {
		return row, "malformed: the login's domain is not a host name", true
	}
	row = postgres.ImportRow{Line: lineNo, Domain: dom, Username: name}
	canonical, why := hashOf(hash)
	if why != "" {
		return row, name + "@" + dom + ": " + why, true
	}
	row.Hash = &canonical
	return row, "", true
}

// hashOf returns hash as stored (password.Canonical), or why it cannot
// be imported, without quoting it.
func hashOf(hash string) (canonical, why string) {
	if hash == "" {
		return "", "no password hash"
	}
	_, canonical, err := password.Canonical(hash)
	if err == nil {
		return canonical, ""
	}
	scheme := ""
	if rest, ok := strings.CutPrefix(hash, "{"); ok {
		if name, _, ok := strings.Cut(rest, "}"); ok {
			// Only a scheme Dovecot knows is named: what stands between
			// braces might be a password.
			base, _, _ := strings.Cut(strings.ToUpper(name), ".")
			if dovecotSchemes[base] {
				scheme = "{" + strings.ToUpper(name) + "}"
			} else {
				return "", "unknown scheme: smtpcreds serves SSHA512, SHA512-CRYPT, BLF-CRYPT and ARGON2ID"
			}
		}
	}
	switch {
	case scheme != "" && password.IsPlain(scheme[1:len(scheme)-1]):
		return "", scheme + " keeps the password in clear (or as an unsalted digest): refused; hash it first (doveadm pw -s SHA512-CRYPT)"
	case errors.Is(err, password.ErrUnknownScheme) && scheme != "":
		return "", "unsupported scheme " + scheme + ": smtpcreds serves SSHA512, SHA512-CRYPT, BLF-CRYPT and ARGON2ID"
	case errors.Is(err, password.ErrUnknownScheme):
		return "", "no {SCHEME} prefix, and not a $6$, $2y$ or $argon2id$ crypt string"
	default:
		return "", "malformed hash: " + strings.TrimPrefix(err.Error(), "password: malformed hash: ")
	}
}

// dovecotSchemes are the password schemes Dovecot 2.3 knows (doveadm pw -l).
var dovecotSchemes = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`ARGON2I ARGON2ID BLF-CRYPT CLEAR CLEARTEXT CRAM-MD5 CRYPT DES-CRYPT
		DIGEST-MD5 HMAC-MD5 LANMAN LDAP-MD5 MD5 MD5-CRYPT NTLM OTP PBKDF2 PLAIN PLAIN-MD4 PLAIN-MD5
		PLAIN-TRUNC RPA SCRAM-SHA-1 SCRAM-SHA-256 SHA SHA1 SHA256 SHA256-CRYPT SHA512 SHA512-CRYPT
		SKEY SMD5 SSHA SSHA256 SSHA512`) {
		dovecotSchemes[n] = true
	}
}

// unquote strips one pair of double quotes around s ("" inside stands for
// "); ok is false for a quote that is not closed.
func unquote(s string) (string, bool) {
	if !strings.HasPrefix(s, `"`) {
		return s, !strings.Contains(s, `"`)
	}
	if len(s) < 2 || !strings.HasSuffix(s, `"`) {
		return "", false
	}
	inner := s[1 : len(s)-1]
	if strings.Count(strings.ReplaceAll(inner, `""`, ""), `"`) > 0 {
		return "", false
	}
	return strings.ReplaceAll(inner, `""`, `"`), true
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// refusalText words a refusal of the database's checks.
func (s *Service) refusalText(f postgres.ImportRefusal) string {
	switch {
	case f.Dup > 0:
		return fmt.Sprintf("duplicate: line %d has the same login", f.Dup)
	case f.Unverified:
		return "domain " + f.Domain + " is not verified: credentials are created only in verified domains (smtpcreds domains verify " + f.Domain + ")"
	case f.Foreign:
		return "foreign domain: " + f.Domain + " is not a domain of this account"
	default:
		return fmt.Sprintf("over the cap: domain %s would have more than %d credentials (--ignore-cap imports past it)", f.Domain, s.cfg.MaxPerDomain)
	}
}
