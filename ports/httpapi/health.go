// Package httpapi serves jobmill over HTTP: health and readiness probes, and the routes of the API.
package httpapi

import (
	"net/http"
)

// Readiness reports whether this process is ready to do its work.
type Readiness func() error

// Route is one more endpoint the process serves (the GraphQL API, GraphiQL).
type Route struct {
	Pattern string // http.ServeMux pattern
	Handler http.Handler
}

// NewHandler returns the HTTP handler: /healthz answers while the process runs, /readyz once its roles
// are running, and routes serve the rest.
func NewHandler(ready Readiness, routes ...Route) http.Handler {
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
