// Package httpapi serves jobmill over HTTP: health and readiness probes now, the API and metrics later.
package httpapi

import (
	"net/http"
)

// Readiness reports whether this process is ready to do its work.
type Readiness func() error

// NewHandler returns the HTTP handler: /healthz answers while the process runs, /readyz once its roles
// are running.
func NewHandler(ready Readiness) http.Handler {
	mux := http.NewServeMux()
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
