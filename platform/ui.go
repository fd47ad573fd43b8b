package platform

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed openapi.json
var openAPI []byte

// ui/dist is the built front end (make ui: TypeScript → esbuild); its
// .keep lets the package build before the first UI build, and then every
// page says how to build it.
//
//go:embed all:ui/dist
var uiFiles embed.FS

// uiHandler serves the front end: files by path, index.html for every
// page route (the client routes), immutable caching for hashed assets.
func uiHandler() http.Handler {
	dist, _ := fs.Sub(uiFiles, "ui/dist")
	files := http.FileServerFS(dist)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if p != "" && !strings.HasSuffix(p, "/") {
			if f, err := dist.Open(p); err == nil {
				f.Close()
				if strings.HasPrefix(p, "assets/") {
					w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
				}
				files.ServeHTTP(w, r)
				return
			}
		}
		if strings.HasPrefix(p, "api/") || strings.HasPrefix(p, "assets/") {
			http.NotFound(w, r)
			return
		}
		index, err := fs.ReadFile(dist, "index.html")
		if err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("the platform's front end is not built into this binary: run make build (it builds platform/ui with npm)\nthe JSON API is at /api/\n"))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(index)
	})
}
