package docs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds"
)

// findChromium returns the browser to drive: $DOCS_CHROMIUM, else Debian's
// chromium. The browser test fails, rather than skips, without one: CI
// installs it.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DOCS_CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("DOCS_CHROMIUM=%s is not an executable browser: %v", p, err)
		}
		return path
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium is needed for this test and was not found: install it " +
		"(Debian: apt-get install -y chromium) or point DOCS_CHROMIUM at a Chrome or Chromium binary")
	return ""
}

// operation is what the page must show for one operation of the spec.
type operation struct {
	ID, Tag, Summary string
}

func specOperations(t *testing.T, spec []byte) (title string, ops []operation) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(spec)
	if err != nil {
		t.Fatalf("parse the spec: %v", err)
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			tag := "default"
			if len(op.Tags) > 0 {
				tag = op.Tags[0]
			}
			ops = append(ops, operation{ID: op.OperationID, Tag: tag, Summary: op.Summary})
		}
	}
	slices.SortFunc(ops, func(a, b operation) int { return strings.Compare(a.ID, b.ID) })
	return doc.Info.Title, ops
}

// problems collects what went wrong in the browser, from CDP events.
type problems struct {
	mu       sync.Mutex
	list     []string
	warnings []string
	requests map[network.RequestID]string
	urls     []string
}

func (p *problems) add(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) snapshot() ([]string, []string, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.list), slices.Clone(p.warnings), slices.Clone(p.urls)
}

func remoteArgs(args []*runtime.RemoteObject) string {
	var parts []string
	for _, a := range args {
		switch {
		case a.Description != "":
			parts = append(parts, a.Description)
		case len(a.Value) > 0:
			var s string
			if json.Unmarshal(a.Value, &s) == nil {
				parts = append(parts, s)
			} else {
				parts = append(parts, string(a.Value))
			}
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}

func (p *problems) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		msg := fmt.Sprintf("console.%s: %s", ev.Type, remoteArgs(ev.Args))
		switch ev.Type {
		case runtime.ConsoleAPICalledTypeError, runtime.ConsoleAPICalledTypeAssert:
			p.add("%s", msg)
		case runtime.ConsoleAPICalledTypeWarning:
			p.mu.Lock()
			p.warnings = append(p.warnings, msg)
			p.mu.Unlock()
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		p.add("exception at %s:%d: %s", d.URL, d.LineNumber, msg)
	case *cdplog.EventEntryAdded:
		// The browser's own messages: CSP violations, failed loads, ...
		if ev.Entry.Level == cdplog.EntryLevelError {
			p.add("browser log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		} else if ev.Entry.Level == cdplog.EntryLevelWarning {
			p.mu.Lock()
			p.warnings = append(p.warnings, "browser log: "+ev.Entry.Text)
			p.mu.Unlock()
		}
	case *network.EventRequestWillBeSent:
		u := ev.Request.URL
		p.mu.Lock()
		p.requests[ev.RequestID] = u
		p.urls = append(p.urls, u)
		p.mu.Unlock()
		if pu, err := url.Parse(u); err != nil {
			p.add("request to an unparsable URL %q", u)
		} else if pu.Scheme != "data" && pu.Hostname() != "127.0.0.1" {
			p.add("request to something other than 127.0.0.1: %s", u)
		}
	case *network.EventLoadingFailed:
		p.mu.Lock()
		u := p.requests[ev.RequestID]
		p.mu.Unlock()
		p.add("request failed: %s: %s (blocked: %s)", u, ev.ErrorText, ev.BlockedReason)
	case *network.EventResponseReceived:
		if ev.Response.Status >= 400 {
			p.add("HTTP %d for %s", ev.Response.Status, ev.Response.URL)
		}
	}
}

// waitFor evaluates expr in the page until it is true, or fails after
// timeout. It is not chromedp.Poll, which compiles its predicate with
// new Function inside the page: the page's CSP (no 'unsafe-eval') forbids
// that, while Runtime.evaluate from DevTools is exempt.
func waitFor(ctx context.Context, expr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%q still false after %v (last error: %v)", expr, timeout, err)
		case <-tick.C:
		}
	}
}

// reportCSP is added to every document before its own scripts run (DevTools
// scripts are exempt from the page's CSP): it turns each CSP violation into a
// console error, on top of the browser's own log entry.
const reportCSP = `document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
    " at " + e.sourceFile + ":" + e.lineNumber);
});`

// TestBrowserRendersDocs serves the real spec as the server would, opens
// /docs in headless Chromium and checks that Swagger UI renders every
// operation, with no console error, exception, CSP violation or failed
// request, and nothing fetched from anywhere but the test server.
func TestBrowserRendersDocs(t *testing.T) {
	chromium := findChromium(t)
	title, ops := specOperations(t, smtpcreds.OpenAPI)
	if len(ops) < 5 {
		t.Fatalf("the spec has only %d operations", len(ops))
	}

	e := echo.New()
	h := echo.WrapHandler(Handler(smtpcreds.OpenAPI))
	for _, p := range Paths() {
		e.Match([]string{http.MethodGet, http.MethodHead}, p, h)
	}
	srv := httptest.NewServer(e) // listens on 127.0.0.1
	defer srv.Close()
	if u, _ := url.Parse(srv.URL); u.Hostname() != "127.0.0.1" {
		t.Fatalf("test server on %s, want 127.0.0.1", srv.URL)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1280, 1024),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	probs := &problems{requests: map[network.RequestID]string{}}
	fail := func(step string, err error) {
		t.Helper()
		list, warnings, urls := probs.snapshot()
		t.Fatalf("%s: %v\nbrowser problems so far:\n  %s\nwarnings:\n  %s\nrequests:\n  %s", step, err,
			strings.Join(list, "\n  "), strings.Join(warnings, "\n  "), strings.Join(urls, "\n  "))
	}
	// Listen starts the browser and opens the tab; chromedp enables the
	// Runtime, Log and Network domains on it, so every event below arrives.
	if err := chromedp.Listen(bctx, probs.listen); err != nil {
		fail(fmt.Sprintf("start %s", chromium), err)
	}
	if _, err := chromedp.Call(bctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: reportCSP}); err != nil {
		fail("add the CSP violation reporter", err)
	}
	if ua, err := chromedp.Run(bctx, chromedp.Evaluate[string](`navigator.userAgent`)); err == nil {
		t.Logf("browser: %s", ua)
	}

	// Load the page and wait until Swagger UI has rendered every operation
	// of the spec and set the page title from it.
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/docs")); err != nil {
		fail("load /docs", err)
	}
	ready := fmt.Sprintf(`document.querySelectorAll("#swagger-ui .opblock").length >= %d && document.title.indexOf(%q) === 0`, len(ops), title)
	if err := waitFor(bctx, ready, 60*time.Second); err != nil {
		fail("wait for Swagger UI to render the spec", err)
	}

	type rendered struct {
		ID, OperationID, Summary string
	}
	got, err := chromedp.Run(bctx, chromedp.Evaluate[[]rendered](`Array.from(document.querySelectorAll("#swagger-ui .opblock")).map(el => ({
		ID: el.id,
		OperationID: (el.querySelector(".opblock-summary-operation-id") || {}).textContent || "",
		Summary: (el.querySelector(".opblock-summary-description") || {}).textContent || "",
	}))`))
	if err != nil {
		fail("read the operations", err)
	}
	errorsText, err := chromedp.Run(bctx, chromedp.Evaluate[string](
		`Array.from(document.querySelectorAll("#swagger-ui .errors-wrapper")).map(el => el.textContent).join("\n")`))
	if err != nil {
		fail("read the errors box", err)
	}
	heading, err := chromedp.Run(bctx, chromedp.Evaluate[string](`(document.querySelector("#swagger-ui .info .title") || {}).textContent || ""`))
	if err != nil {
		fail("read the heading", err)
	}
	pageTitle, err := chromedp.Run(bctx, chromedp.Title())
	if err != nil {
		fail("read the title", err)
	}
	if errorsText != "" {
		t.Errorf("Swagger UI shows errors: %s", errorsText)
	}
	if !strings.Contains(heading, title) {
		t.Errorf("heading %q does not name %q", heading, title)
	}
	t.Logf("page title %q, %d operations rendered", pageTitle, len(got))
	byID := map[string]rendered{}
	for _, r := range got {
		byID[r.OperationID] = r
	}
	for _, op := range ops {
		r, ok := byID[op.ID]
		if !ok {
			t.Errorf("operation %s (%q) not rendered", op.ID, op.Summary)
			continue
		}
		if strings.TrimSpace(r.Summary) != op.Summary {
			t.Errorf("operation %s: summary %q, want %q", op.ID, r.Summary, op.Summary)
		}
		if r.ID != "operations-"+op.Tag+"-"+op.ID {
			t.Errorf("operation %s: element id %q", op.ID, r.ID)
		}
	}
	for _, s := range []string{"Create an SMTP credential", "List the SMTP credentials of a domain"} {
		if !slices.ContainsFunc(got, func(r rendered) bool { return strings.TrimSpace(r.Summary) == s }) {
			t.Errorf("%q not on the page", s)
		}
	}

	// Open one operation, which renders its parameters, request body schema
	// and responses: more of Swagger UI's code runs, and shows in the screenshot.
	opSel := "#operations-credentials-createCredential"
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(opSel+" .opblock-summary-control")),
		chromedp.WaitVisible(chromedp.CSS(opSel+" .opblock-body .responses-wrapper")),
	); err != nil {
		fail("expand createCredential", err)
	}
	if err := waitFor(bctx, fmt.Sprintf(`document.querySelector(%q).textContent.indexOf("Request body") >= 0`, opSel+" .opblock-body"), 20*time.Second); err != nil {
		fail("wait for the request body of createCredential", err)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		fail("screenshot", err)
	}
	if !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) || len(shot) < 10<<10 {
		t.Errorf("screenshot is not a non-trivial PNG: %d bytes", len(shot))
	}
	if img, err := png.Decode(bytes.NewReader(shot)); err != nil {
		t.Errorf("decode the screenshot: %v", err)
	} else if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 1000 {
		t.Errorf("screenshot is only %dx%d", b.Dx(), b.Dy())
	} else {
		t.Logf("screenshot: %dx%d, %d bytes", b.Dx(), b.Dy(), len(shot))
	}
	// ArtifactDir is kept with `go test -artifacts`; DOCS_SCREENSHOT keeps a copy anywhere.
	shotPath := filepath.Join(t.ArtifactDir(), "docs.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Error(err)
	}
	if p := os.Getenv("DOCS_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Error(err)
		}
		shotPath = p
	}
	if os.Getenv("DOCS_SCREENSHOT") == "" {
		t.Logf("screenshot in %s (kept with go test -artifacts; or set DOCS_SCREENSHOT=/path/to.png)", shotPath)
	} else {
		t.Logf("screenshot saved to %s", shotPath)
	}

	// The interactive parts run under the same CSP: "Try it out" renders the
	// request form (nothing is sent until Execute), and "Authorize" opens the
	// Basic auth dialog.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(opSel+" .try-out__btn")),
		chromedp.WaitVisible(chromedp.CSS(opSel+" .btn.execute")),
		chromedp.Click(chromedp.CSS("#swagger-ui .btn.authorize")),
		chromedp.WaitVisible(chromedp.CSS("#swagger-ui .modal-ux .auth-container input[type=password]")),
	); err != nil {
		fail("open Try it out and Authorize", err)
	}

	// Give late events (a console error after the last render) a chance to
	// arrive: a round trip to the page after everything above has happened.
	if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`1`)); err != nil {
		fail("final round trip", err)
	}
	list, warnings, urls := probs.snapshot()
	for _, w := range warnings {
		t.Logf("browser warning (not a failure): %s", w)
	}
	for _, p := range list {
		t.Errorf("browser: %s", p)
	}
	// The page loaded what it should, and only from the test server.
	var fetched []string
	for _, u := range urls {
		if pu, err := url.Parse(u); err == nil && pu.Scheme != "data" {
			fetched = append(fetched, pu.Path)
		}
	}
	for _, p := range []string{"/docs", "/openapi.yaml", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/init.js", "/docs/assets/swagger-ui.css"} {
		if !slices.Contains(fetched, p) {
			t.Errorf("the browser never fetched %s; it fetched %v", p, fetched)
		}
	}
}
