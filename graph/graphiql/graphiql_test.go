package graphiql

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// mounted serves the handler the way the API server does: under /graphiql/ with the prefix stripped.
func mounted(t *testing.T, endpoint string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/graphiql/", http.StripPrefix("/graphiql", Handler(endpoint)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// noRedirects is a client that reports redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, client *http.Client, rawURL string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if client == nil {
		// A transport of its own that adds no Accept-Encoding: bodies arrive as served.
		client = &http.Client{Transport: &http.Transport{DisableCompression: true}}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read GET %s: %v", rawURL, err)
	}
	return resp, body
}

var (
	scriptSrc = regexp.MustCompile(`<script[^>]*\ssrc="([^"]*)"`)
	linkHref  = regexp.MustCompile(`<link[^>]*\shref="([^"]*)"`)
)

// references lists the script and stylesheet URLs of a page.
func references(page string) (scripts, styles []string) {
	for _, m := range scriptSrc.FindAllStringSubmatch(page, -1) {
		scripts = append(scripts, m[1])
	}
	for _, m := range linkHref.FindAllStringSubmatch(page, -1) {
		styles = append(styles, m[1])
	}
	return scripts, styles
}

func TestPageAndAssetsAreServedLocally(t *testing.T) {
	srv := mounted(t, "/query")
	pageURL := srv.URL + "/graphiql/"
	resp, body := get(t, nil, pageURL, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /graphiql/ = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("page Content-Type = %q, want text/html; charset=utf-8", ct)
	}
	page := string(body)
	if !strings.Contains(page, `data-endpoint="/query"`) {
		t.Errorf("page does not name the endpoint /query:\n%s", page)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "connect-src 'self'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}

	scripts, styles := references(page)
	if len(scripts) != 4 || len(styles) != 2 {
		t.Fatalf("page references scripts %v and stylesheets %v, want 4 scripts (React, ReactDOM, GraphiQL, start) and 2 stylesheets", scripts, styles)
	}
	base, err := url.Parse(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	check := func(ref, wantType string) {
		t.Helper()
		if strings.Contains(ref, "://") || strings.HasPrefix(ref, "//") || strings.HasPrefix(ref, "/") {
			t.Errorf("page refers to %q: want a relative URL under assets/ (no scheme, host or absolute path)", ref)
			return
		}
		if !strings.HasPrefix(ref, "assets/") {
			t.Errorf("page refers to %q outside assets/", ref)
		}
		u, err := base.Parse(ref)
		if err != nil {
			t.Errorf("page refers to %q: %v", ref, err)
			return
		}
		resp, body := get(t, nil, u.String(), nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", u.Path, resp.StatusCode)
			return
		}
		if ct := resp.Header.Get("Content-Type"); ct != wantType {
			t.Errorf("GET %s: Content-Type %q, want %q", u.Path, ct, wantType)
		}
		if len(body) == 0 {
			t.Errorf("GET %s: empty body", u.Path)
		}
		if want := loadAssets()[strings.TrimPrefix(ref, "assets/")]; want == nil || !bytes.Equal(body, want.body) {
			t.Errorf("GET %s: body differs from the embedded file", u.Path)
		}
	}
	for _, s := range scripts {
		check(s, "text/javascript; charset=utf-8")
	}
	for _, s := range styles {
		check(s, "text/css; charset=utf-8")
	}
}

// TestAssetsLoadNothingRemote: the stylesheets import nothing and the fonts are inline, so the page
// needs no network beyond the server.
func TestAssetsLoadNothingRemote(t *testing.T) {
	remote := regexp.MustCompile(`(?i)@import|url\(\s*['"]?(https?:)?//`)
	for name, a := range loadAssets() {
		if strings.HasSuffix(name, ".css") {
			if m := remote.Find(a.body); m != nil {
				t.Errorf("%s loads something from elsewhere: %q", name, m)
			}
		}
	}
	for _, name := range []string{"graphiql.LICENSE.txt", "react.LICENSE.txt", "react-dom.LICENSE.txt"} {
		if a := loadAssets()[name]; a == nil || !bytes.Contains(a.body, []byte("MIT License")) {
			t.Errorf("assets/%s is missing or not the MIT licence", name)
		}
	}
}

func TestMountPointWithoutSlashRedirects(t *testing.T) {
	// Mounted at the exact path too, so that the handler sees the stripped, empty path itself.
	mux := http.NewServeMux()
	h := http.StripPrefix("/graphiql", Handler("/query"))
	mux.Handle("/graphiql", h)
	mux.Handle("/graphiql/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, _ := get(t, noRedirects, srv.URL+"/graphiql?x=1", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/graphiql/?x=1" {
		t.Fatalf("GET /graphiql?x=1 = %d Location %q, want 301 to /graphiql/?x=1", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, noRedirects, srv.URL+"/graphiql/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /graphiql/ = %d, want 200", resp.StatusCode)
	}
}

// TestPrefixStrippedWithSlash: StripPrefix("/graphiql/") leaves "" for the page and "assets/…" for the
// assets; both work.
func TestPrefixStrippedWithSlash(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/graphiql/", http.StripPrefix("/graphiql/", Handler("/query")))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, p := range []string{"/graphiql/", "/graphiql/assets/start.js"} {
		if resp, _ := get(t, noRedirects, srv.URL+p, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", p, resp.StatusCode)
		}
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	srv := mounted(t, "/query")
	for _, p := range []string{"/graphiql/assets/nope.js", "/graphiql/assets/", "/graphiql/other", "/graphiql/page.html"} {
		if resp, _ := get(t, noRedirects, srv.URL+p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, resp.StatusCode)
		}
	}
	// Paths that a mux would clean first, straight to the handler.
	for _, p := range []string{"/assets/../page.html", "/assets/../graphiql.go", "/../assets/start.js"} {
		rec := httptest.NewRecorder()
		Handler("/query").ServeHTTP(rec, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: p}, Header: http.Header{}})
		if rec.Code != http.StatusNotFound {
			t.Errorf("path %s = %d, want 404", p, rec.Code)
		}
	}
	resp, err := http.Post(srv.URL+"/graphiql/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /graphiql/ = %d Allow %q, want 405 with Allow: GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestGzipAndRevalidation(t *testing.T) {
	srv := mounted(t, "/query")
	u := srv.URL + "/graphiql/assets/graphiql.min.js"
	resp, body := get(t, nil, u, http.Header{"Accept-Encoding": {"br, gzip;q=0.8"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("GET with Accept-Encoding gzip = %d, Content-Encoding %q; want 200 gzip", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, loadAssets()["graphiql.min.js"].body) {
		t.Fatal("gzipped graphiql.min.js does not unpack to the embedded file")
	}
	if len(body) >= len(plain)/2 {
		t.Errorf("gzip made %d bytes of %d", len(body), len(plain))
	}
	if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("Vary = %q, want Accept-Encoding", resp.Header.Get("Vary"))
	}

	resp, _ = get(t, nil, u, http.Header{"Accept-Encoding": {"gzip;q=0, *"}})
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 got Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on an asset")
	}
	resp, body = get(t, nil, u, http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("GET with If-None-Match = %d with %d bytes, want 304 and none", resp.StatusCode, len(body))
	}
}

func TestEndpointIsEscaped(t *testing.T) {
	srv := mounted(t, `/query"><script>alert(1)</script>`)
	_, body := get(t, nil, srv.URL+"/graphiql/", nil)
	if bytes.Contains(body, []byte("<script>alert")) {
		t.Fatalf("endpoint was not escaped:\n%s", body)
	}
}

func TestAbsoluteEndpointIsAllowedToConnect(t *testing.T) {
	csp := contentSecurityPolicy(&url.URL{Scheme: "https", Host: "api.example.com", Path: "/query"})
	if !strings.Contains(csp, "connect-src 'self' https://api.example.com wss://api.example.com;") {
		t.Fatalf("CSP = %q, want the endpoint's https and wss origins in connect-src", csp)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                  false,
		"gzip":              true,
		"GZIP":              true,
		"deflate, gzip":     true,
		"gzip;q=0":          false,
		"gzip; q=0.5":       true,
		"*":                 true,
		"*;q=0":             false,
		"gzip;q=0, *":       false,
		"br, identity":      false,
		"x-gzip":            true,
		"identity, *;q=0.1": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestHandlerRefusesEmptyEndpoint(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Handler(\"\") did not panic")
		}
	}()
	Handler("")
}
