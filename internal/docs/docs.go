// Package docs serves the interactive API reference (Swagger UI) for an
// OpenAPI document, embedded in the binary so that it works offline.
//
// Swagger UI (npm swagger-ui-dist, vendored in assets/, see assets/VERSION
// and update-assets.sh) and the page that starts it are embedded, and the
// page loads nothing but its own origin.
//
// Handler answers GET and HEAD on:
//
//	/openapi.yaml       the spec, byte for byte as given
//	/docs               the HTML page
//	/docs/              a redirect to /docs
//	/docs/assets/NAME   the embedded scripts, styles, icon and licenses
//
// and 404 on any other path under /docs/. Mount it on an Echo instance after
// the API's own routes, outside authentication, with
//
//	h := docs.Handler(smtpcreds.OpenAPI)
//	for _, p := range docs.Paths() {
//		e.Match([]string{http.MethodGet, http.MethodHead}, p, echo.WrapHandler(h))
//	}
//
// or on a net/http ServeMux with mux.Handle("/openapi.yaml", h),
// mux.Handle("/docs", h) and mux.Handle("/docs/", h).
//
// The page refers to its assets and the spec by relative URLs, so it also
// works when a proxy serves the whole API under a path prefix.
package docs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths returns the routes to mount Handler on, in Echo's syntax: the spec,
// the page, and everything under /docs/ (a wildcard, so that unknown names
// get the handler's 404).
func Paths() []string {
	return []string{"/openapi.yaml", "/docs", "/docs/*"}
}

// Content-Security-Policy of the page: everything from its own origin, data:
// images for the icons swagger-ui.css inlines, no inline script or style.
// connect-src 'self' lets the page fetch the spec and "Try it out" call the
// API on the same origin.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Content-Security-Policy of everything else: nothing runs if a browser
// renders the YAML or an asset as a document.
const resourceCSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

const assetCacheControl = "public, max-age=86400"

// contentTypes is fixed here rather than left to package mime, whose answers
// depend on the machine's /etc/mime.types.
var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".png":  "image/png",
	".txt":  "text/plain; charset=utf-8",
	".html": "text/html; charset=utf-8",
	"":      "text/plain; charset=utf-8", // LICENSE, NOTICE
}

// vendored holds the files copied from swagger-ui-dist by update-assets.sh.
//
//go:embed assets/swagger-ui-bundle.js assets/swagger-ui.css assets/favicon-32x32.png
//go:embed assets/LICENSE assets/NOTICE assets/swagger-ui-bundle.js.LICENSE.txt
var vendored embed.FS

// own holds this package's page, its start-up script and its styles.
//
//go:embed web/index.html web/init.js web/docs.css
var own embed.FS

// resource is one response body, with its validators and, for the larger
// text files, a gzip-encoded copy made on first use.
type resource struct {
	body        []byte
	contentType string
	etag        string

	gzipOnce sync.Once
	gzipped  []byte // nil when gzip does not pay
}

func newResource(body []byte, contentType string) *resource {
	sum := sha256.Sum256(body)
	return &resource{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
}

func (r *resource) gzipBody() []byte {
	r.gzipOnce.Do(func() {
		compressible := strings.HasPrefix(r.contentType, "text/") || strings.HasPrefix(r.contentType, "application/yaml")
		if len(r.body) < 1024 || !compressible {
			return
		}
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(r.body)
		zw.Close()
		if b.Len() < len(r.body) {
			r.gzipped = b.Bytes()
		}
	})
	return r.gzipped
}

var (
	assetsOnce sync.Once
	assets     map[string]*resource // by file name, as under /docs/assets/
	docsPage   *resource
)

// loadAssets reads the embedded files once and renders the page, whose
// asset URLs carry a hash of each file's content (?v=...), so that the
// browser's day-long cache never outlives an update.
func loadAssets() {
	assets = map[string]*resource{}
	add := func(fsys embed.FS, dir string) {
		entries, err := fs.ReadDir(fsys, dir)
		if err != nil {
			panic(err)
		}
		for _, e := range entries {
			name := e.Name()
			if name == "index.html" {
				continue
			}
			body, err := fs.ReadFile(fsys, dir+"/"+name)
			if err != nil {
				panic(err)
			}
			ct, ok := contentTypes[path.Ext(name)]
			if !ok {
				panic("docs: no content type for " + name)
			}
			assets[name] = newResource(body, ct)
		}
	}
	add(vendored, "assets")
	add(own, "web")

	html, err := own.ReadFile("web/index.html")
	if err != nil {
		panic(err)
	}
	for name, a := range assets {
		html = bytes.ReplaceAll(html, []byte("{{"+name+"}}"), []byte(strings.Trim(a.etag, `"`)[:12]))
	}
	if i := bytes.Index(html, []byte("{{")); i >= 0 {
		panic(fmt.Sprintf("docs: web/index.html names an unknown asset at byte %d", i))
	}
	docsPage = newResource(html, contentTypes[".html"])
}

// Handler serves spec at /openapi.yaml and the Swagger UI page that renders
// it at /docs; see the package comment for the paths and how to mount them.
// spec is served as-is and must not be modified afterwards.
func Handler(spec []byte) http.Handler {
	assetsOnce.Do(loadAssets)
	return &handler{spec: newResource(spec, "application/yaml; charset=utf-8")}
}

type handler struct {
	spec *resource
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")

	p := r.URL.Path
	var res *resource
	cacheControl := "no-cache" // revalidate: the spec and page change with the binary
	csp := resourceCSP
	switch {
	case p == "/openapi.yaml":
		res = h.spec
	case p == "/docs":
		res = docsPage
		csp = pageCSP
		hdr.Set("X-Frame-Options", "DENY")
	case p == "/docs/":
		if !allowMethod(w, r) {
			return
		}
		// A relative Location (http.Redirect would make it absolute), so
		// that it also works under a path prefix.
		hdr.Set("Location", "../docs")
		w.WriteHeader(http.StatusMovedPermanently)
		return
	case strings.HasPrefix(p, "/docs/assets/"):
		res = assets[strings.TrimPrefix(p, "/docs/assets/")]
		cacheControl = assetCacheControl
	}
	if res == nil {
		http.NotFound(w, r)
		return
	}
	if !allowMethod(w, r) {
		return
	}

	hdr.Set("Content-Security-Policy", csp)
	hdr.Set("Cache-Control", cacheControl)
	hdr.Set("Content-Type", res.contentType)
	body, etag := res.body, res.etag
	if gz := res.gzipBody(); gz != nil {
		hdr.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			hdr.Set("Content-Encoding", "gzip")
			body, etag = gz, strings.TrimSuffix(etag, `"`)+`-gzip"`
		}
	}
	hdr.Set("ETag", etag)
	// ServeContent answers HEAD, If-None-Match and Range.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// allowMethod answers 405 to anything but GET and HEAD.
func allowMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
	return false
}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "x-gzip" {
				continue
			}
			for _, param := range strings.Split(params, ";") {
				k, val, _ := strings.Cut(param, "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") {
					q, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					return err == nil && q > 0
				}
			}
			return true
		}
	}
	return false
}
