package docs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/smtpcreds/smtpcreds"
)

// testSpec has bytes a careless handler would change: CRLF, a BOM-less
// non-ASCII character, trailing spaces, no final newline.
var testSpec = []byte("openapi: 3.0.3\r\ninfo:\r\n  title: Tést  \r\n  version: '1'\r\npaths: {}")

func serve(t *testing.T, h http.Handler, method, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func readBody(t *testing.T, res *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSpecServedAsIs(t *testing.T) {
	h := Handler(testSpec)
	res := serve(t, h, http.MethodGet, "/openapi.yaml")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if got := readBody(t, res); !bytes.Equal(got, testSpec) {
		t.Fatalf("body %q, want the spec bytes %q", got, testSpec)
	}
	for k, want := range map[string]string{
		"Content-Type":           "application/yaml; charset=utf-8",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-cache",
	} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("ETag") == "" {
		t.Errorf("missing CSP or ETag: %v", res.Header)
	}

	// The real spec, compressed on request, decompresses to the same bytes.
	h = Handler(smtpcreds.OpenAPI)
	res = serve(t, h, http.MethodGet, "/openapi.yaml", "Accept-Encoding", "gzip, deflate, br")
	if res.Header.Get("Content-Encoding") != "gzip" || res.Header.Get("Vary") != "Accept-Encoding" {
		t.Fatalf("not gzipped: %v", res.Header)
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, smtpcreds.OpenAPI) {
		t.Fatal("gunzipped spec differs from smtpcreds.OpenAPI")
	}
	// Without Accept-Encoding, or with gzip refused, it is sent plain.
	for _, ae := range []string{"", "identity", "gzip;q=0, br"} {
		res = serve(t, h, http.MethodGet, "/openapi.yaml", "Accept-Encoding", ae)
		if ce := res.Header.Get("Content-Encoding"); ce != "" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q", ae, ce)
		}
		if got := readBody(t, res); !bytes.Equal(got, smtpcreds.OpenAPI) {
			t.Errorf("Accept-Encoding %q: body differs from the spec", ae)
		}
	}
}

func TestPage(t *testing.T) {
	h := Handler(testSpec)
	res := serve(t, h, http.MethodGet, "/docs")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff")
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP %q allows %q", csp, bad)
		}
	}
	html := string(readBody(t, res))

	// No inline script: every <script> has a src and an empty body.
	scripts := regexp.MustCompile(`(?s)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1)
	if len(scripts) == 0 {
		t.Fatal("no <script> in the page")
	}
	for _, s := range scripts {
		if !strings.Contains(s[1], "src=") || strings.TrimSpace(s[2]) != "" {
			t.Errorf("inline script: %s", s[0])
		}
	}
	if strings.Contains(html, "style=") || strings.Contains(html, "<style") || strings.Contains(html, "://") {
		t.Error("the page has an inline style or an absolute URL")
	}

	// Every URL the page names resolves, relative to /docs, to a 200.
	urls := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(html, -1)
	var names []string
	for _, u := range urls {
		target := "/" + u[1] // relative to /docs, that is to /
		res := serve(t, h, http.MethodGet, target)
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", target, res.StatusCode)
		}
		if strings.HasPrefix(u[1], "docs/assets/") {
			name, query, _ := strings.Cut(strings.TrimPrefix(u[1], "docs/assets/"), "?")
			names = append(names, name)
			if !regexp.MustCompile(`^v=[0-9a-f]{12}$`).MatchString(query) {
				t.Errorf("%s: no content-hash query", u[1])
			}
		}
	}
	slices.Sort(names)
	want := []string{"docs.css", "favicon-32x32.png", "init.js", "swagger-ui-bundle.js", "swagger-ui.css"}
	if !slices.Equal(names, want) {
		t.Errorf("page loads %v, want %v", names, want)
	}
	if !strings.Contains(html, `href="openapi.yaml"`) {
		t.Error("the page does not link the spec")
	}
}

func TestAssets(t *testing.T) {
	h := Handler(testSpec)
	cases := map[string]string{
		"swagger-ui-bundle.js":             "text/javascript; charset=utf-8",
		"swagger-ui.css":                   "text/css; charset=utf-8",
		"favicon-32x32.png":                "image/png",
		"init.js":                          "text/javascript; charset=utf-8",
		"docs.css":                         "text/css; charset=utf-8",
		"LICENSE":                          "text/plain; charset=utf-8",
		"NOTICE":                           "text/plain; charset=utf-8",
		"swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
	}
	for name, ct := range cases {
		res := serve(t, h, http.MethodGet, "/docs/assets/"+name+"?v=whatever")
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", name, res.StatusCode)
			continue
		}
		if got := res.Header.Get("Content-Type"); got != ct {
			t.Errorf("%s: Content-Type %q, want %q", name, got, ct)
		}
		if got := res.Header.Get("Cache-Control"); got != "public, max-age=86400" {
			t.Errorf("%s: Cache-Control %q", name, got)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", name)
		}
		file := filepath.Join("assets", name)
		if _, err := os.Stat(file); err != nil {
			file = filepath.Join("web", name)
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBody(t, res); !bytes.Equal(got, want) {
			t.Errorf("%s: body differs from %s", name, file)
		}
	}

	// The bundle is gzipped for clients that take it, and validates with its ETag.
	res := serve(t, h, http.MethodGet, "/docs/assets/swagger-ui-bundle.js", "Accept-Encoding", "gzip")
	gz := readBody(t, res)
	if res.Header.Get("Content-Encoding") != "gzip" || len(gz) > 700_000 {
		t.Errorf("bundle: Content-Encoding %q, %d bytes", res.Header.Get("Content-Encoding"), len(gz))
	}
	etag := res.Header.Get("ETag")
	res = serve(t, h, http.MethodGet, "/docs/assets/swagger-ui-bundle.js", "Accept-Encoding", "gzip", "If-None-Match", etag)
	if res.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", res.StatusCode)
	}
}

func TestHead(t *testing.T) {
	h := Handler(testSpec)
	for _, p := range []string{"/openapi.yaml", "/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/init.js"} {
		get := serve(t, h, http.MethodGet, p)
		getBody := readBody(t, get)
		head := serve(t, h, http.MethodHead, p)
		if head.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: status %d", p, head.StatusCode)
		}
		if b := readBody(t, head); len(b) != 0 {
			t.Errorf("HEAD %s: %d body bytes", p, len(b))
		}
		for _, k := range []string{"Content-Type", "Content-Length", "Cache-Control", "ETag", "Content-Security-Policy", "X-Content-Type-Options"} {
			if head.Header.Get(k) == "" || head.Header.Get(k) != get.Header.Get(k) {
				t.Errorf("HEAD %s: %s = %q, GET has %q", p, k, head.Header.Get(k), get.Header.Get(k))
			}
		}
		if head.Header.Get("Content-Length") != strconv.Itoa(len(getBody)) {
			t.Errorf("HEAD %s: Content-Length %s, GET body has %d bytes", p, head.Header.Get("Content-Length"), len(getBody))
		}
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h := Handler(testSpec)
	for _, p := range []string{
		"/docs/nope", "/docs/assets/", "/docs/assets/nope.js", "/docs/assets/index.html",
		"/docs/assets/VERSION", "/docs/assets/../docs.go", "/docs/assets/web/init.js",
		"/docs/assets/assets/swagger-ui.css", "/docs/index.html", "/docsx", "/openapi.json", "/",
	} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			if res := serve(t, h, m, p); res.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s: status %d, want 404", m, p, res.StatusCode)
			}
		}
	}

	res := serve(t, h, http.MethodGet, "/docs/")
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "../docs" {
		t.Errorf("/docs/: status %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}

	for _, p := range []string{"/openapi.yaml", "/docs", "/docs/assets/init.js"} {
		res := serve(t, h, http.MethodPost, p)
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: status %d, Allow %q", p, res.StatusCode, res.Header.Get("Allow"))
		}
	}
}

// TestEchoMount mounts the handler the way the package comment says and
// checks that Echo routes every path to it.
func TestEchoMount(t *testing.T) {
	e := echo.New()
	h := echo.WrapHandler(Handler(testSpec))
	for _, p := range Paths() {
		e.Match([]string{http.MethodGet, http.MethodHead}, p, h)
	}
	for p, want := range map[string]int{
		"/openapi.yaml":                     200,
		"/docs":                             200,
		"/docs/":                            301,
		"/docs/assets/swagger-ui-bundle.js": 200,
		"/docs/assets/init.js?v=1":          200,
		"/docs/nope":                        404,
		"/docs/assets/nope.css":             404,
	} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			if res := serve(t, e, m, p); res.StatusCode != want {
				t.Errorf("%s %s via Echo: status %d, want %d", m, p, res.StatusCode, want)
			}
		}
	}
	if res := serve(t, e, http.MethodGet, "/openapi.yaml"); !bytes.Equal(readBody(t, res), testSpec) {
		t.Error("spec changed on its way through Echo")
	}
}

// TestVendoredMatchesVersion checks assets/ against the hashes that
// update-assets.sh wrote into assets/VERSION, so that a hand edit of a
// vendored file, or a copy that skipped the script, shows up offline.
func TestVendoredMatchesVersion(t *testing.T) {
	f, err := os.Open("assets/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fields := map[string]string{}
	var listed []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k] = v
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 2 || !strings.HasPrefix(line, "  ") {
			continue
		}
		sum, name := parts[0], parts[1]
		listed = append(listed, name)
		b, err := os.ReadFile(filepath.Join("assets", name))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(b)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("assets/%s does not match its sha256 in assets/VERSION: rerun update-assets.sh", name)
		}
	}
	if fields["package"] != "swagger-ui-dist" || fields["version"] == "" || fields["license"] != "Apache-2.0" {
		t.Errorf("assets/VERSION fields: %v", fields)
	}

	// VERSION lists exactly the vendored files that are embedded.
	entries, err := vendored.ReadDir("assets")
	if err != nil {
		t.Fatal(err)
	}
	var embedded []string
	for _, e := range entries {
		embedded = append(embedded, e.Name())
	}
	slices.Sort(listed)
	if !slices.Equal(listed, embedded) {
		t.Errorf("assets/VERSION lists %v, the binary embeds %v", listed, embedded)
	}
}
