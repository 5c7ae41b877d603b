// Package graphiql serves GraphiQL, the in-browser GraphQL IDE, for the jobmill API. Everything it
// needs is embedded in the binary (GraphiQL 3's UMD build, React 18 and ReactDOM 18, see assets/ and
// update-assets.sh), so the page works on machines without internet access.
//
// The page refers to its assets with relative URLs (assets/…), so it works under any mount point that
// ends in a slash. Mount it with its prefix stripped:
//
//	mux.Handle("/graphiql/", http.StripPrefix("/graphiql", graphiql.Handler("/query")))
//
// ServeMux redirects /graphiql to /graphiql/; a request that reaches the handler with the prefix stripped
// to nothing is redirected to the same path plus a slash as well.
//
// Queries and mutations go to the endpoint with HTTP POST; subscriptions use a websocket to the same
// endpoint (ws:// or wss:// after the page's own scheme) speaking graphql-transport-ws. The headers the
// user types into GraphiQL's Headers editor, such as {"Authorization": "Bearer jm_…"}, are sent with
// every HTTP request and as the websocket's connection_init payload.
package graphiql

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assetFiles embed.FS

//go:embed page.html
var pageSource string

var pageTemplate = template.Must(template.New("page.html").Parse(pageSource))

// contentTypes of the embedded files, by extension; fixed here rather than taken from the system's MIME
// tables, which differ between machines.
var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".txt": "text/plain; charset=utf-8",
}

// asset is one embedded file, with a gzip copy made on first request.
type asset struct {
	contentType string
	body        []byte
	etag        string

	gzipOnce sync.Once
	gzipBody []byte
	gzipETag string
}

// gzipped returns the compressed body, or nil when compressing does not pay.
func (a *asset) gzipped() ([]byte, string) {
	a.gzipOnce.Do(func() {
		if len(a.body) < 1024 || strings.HasPrefix(a.contentType, "text/plain") {
			return
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(a.body)
		if zw.Close() != nil || buf.Len() >= len(a.body) {
			return
		}
		a.gzipBody = buf.Bytes()
		a.gzipETag = strings.TrimSuffix(a.etag, `"`) + `-gzip"`
	})
	return a.gzipBody, a.gzipETag
}

// loadAssets reads the embedded assets once for every handler.
var loadAssets = sync.OnceValue(func() map[string]*asset {
	out := map[string]*asset{}
	err := fs.WalkDir(assetFiles, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("%s: no content type for its extension", name)
		}
		body, err := assetFiles.ReadFile(name)
		if err != nil {
			return err
		}
		out[strings.TrimPrefix(name, "assets/")] = &asset{contentType: ct, body: body, etag: etagOf(body)}
		return nil
	})
	if err != nil {
		panic("graphiql: embedded assets: " + err.Error())
	}
	return out
})

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

type handler struct {
	page     []byte
	pageETag string
	csp      string
	assets   map[string]*asset
}

// Handler serves GraphiQL for the GraphQL endpoint, normally an absolute path such as "/query" (an
// absolute http or https URL works as well). It serves the page at "/" and the assets at "/assets/NAME"
// of the path it receives, i.e. after the mount prefix has been stripped. It panics on an empty or
// unparsable endpoint, a wiring mistake.
func Handler(endpoint string) http.Handler {
	u, err := url.Parse(endpoint)
	if endpoint == "" || err != nil {
		panic(fmt.Sprintf("graphiql: invalid endpoint %q", endpoint))
	}
	var page bytes.Buffer
	if err := pageTemplate.Execute(&page, struct{ Endpoint string }{endpoint}); err != nil {
		panic("graphiql: render page: " + err.Error())
	}
	return &handler{
		page:     page.Bytes(),
		pageETag: etagOf(page.Bytes()),
		csp:      contentSecurityPolicy(u),
		assets:   loadAssets(),
	}
}

// contentSecurityPolicy lets the page run only its own scripts and talk only to its own origin, plus the
// endpoint's origin (http and websocket) when that is another one.
func contentSecurityPolicy(endpoint *url.URL) string {
	connect := []string{"'self'"}
	if (endpoint.Scheme == "http" || endpoint.Scheme == "https") && endpoint.Host != "" {
		ws := "ws"
		if endpoint.Scheme == "https" {
			ws = "wss"
		}
		connect = append(connect, endpoint.Scheme+"://"+endpoint.Host, ws+"://"+endpoint.Host)
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		// GraphiQL's editors set style attributes.
		"style-src 'self' 'unsafe-inline'",
		// The fonts and icons are data: URLs inside graphiql.min.css.
		"font-src 'self' data:",
		"img-src 'self' data:",
		"connect-src " + strings.Join(connect, " "),
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case p == "":
		if r.URL.Path == "" {
			if to, ok := slashRedirect(r); ok {
				http.Redirect(w, r, to, http.StatusMovedPermanently)
				return
			}
		}
		h.servePage(w, r)
	case strings.HasPrefix(p, "assets/"):
		a := h.assets[strings.TrimPrefix(p, "assets/")]
		if a == nil {
			http.NotFound(w, r)
			return
		}
		serveAsset(w, r, a)
	default:
		http.NotFound(w, r)
	}
}

// slashRedirect is where a request for the mount point without its trailing slash (/graphiql) goes:
// the relative asset URLs only resolve under /graphiql/. The original path is the request URI's, since
// StripPrefix left none.
func slashRedirect(r *http.Request) (string, bool) {
	if r.RequestURI == "" {
		return "", false
	}
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil || u.Path == "" || strings.HasSuffix(u.Path, "/") {
		return "", false
	}
	to := u.EscapedPath() + "/"
	if u.RawQuery != "" {
		to += "?" + u.RawQuery
	}
	return to, true
}

func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", h.pageETag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(h.page))
}

// serveAsset answers with the file, gzipped when the client takes it. Browsers revalidate (ETag) on
// every load, so a new binary's assets are picked up at once.
func serveAsset(w http.ResponseWriter, r *http.Request, a *asset) {
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-cache")
	hd.Add("Vary", "Accept-Encoding")
	body, etag := a.body, a.etag
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		if gz, gzETag := a.gzipped(); gz != nil {
			body, etag = gz, gzETag
			hd.Set("Content-Encoding", "gzip")
		}
	}
	hd.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip: named with a q above 0, or not
// named and allowed through "*".
func acceptsGzip(header string) bool {
	gzipQ, starQ := -1.0, -1.0
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(part, ";")
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "gzip", "x-gzip":
			gzipQ = q
		case "*":
			starQ = q
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}
