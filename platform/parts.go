package platform

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// Resumable uploads: a bundle sent in parts to
// PUT /api/uploads/parts/{hash}?offset=N, each appended where the previous
// ended (a part at another offset is refused with the offset the server
// has, so a client that lost its connection asks GET …/{hash} and goes on
// from there), then POST …/{hash}/complete, which checks the SHA-256 and
// treats the bundle as a whole upload. Parts are kept per user in
// Config.PartsDir; nobody appends to another user's.

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// partRequest authenticates a parts request and returns its token and the
// file of the user's upload of the hash; or answers 401/400/404.
func (s *Server) partRequest(w http.ResponseWriter, r *http.Request) (Token, string, bool) {
	tok, ok := s.uploader(w, r)
	if !ok {
		return Token{}, "", false
	}
	path, ok := s.partPath(w, r, tok)
	return tok, path, ok
}

// partPath returns the file of user's upload of hash, or answers 400/404.
func (s *Server) partPath(w http.ResponseWriter, r *http.Request, tok Token) (string, bool) {
	if s.cfg.PartsDir == "" {
		writeErr(w, http.StatusNotFound, "this platform takes whole uploads only (POST /api/uploads)")
		return "", false
	}
	h := r.PathValue("hash")
	if !hexHash.MatchString(h) {
		writeErr(w, http.StatusBadRequest, "%q is not a SHA-256 in hex (64 lower-case digits)", h)
		return "", false
	}
	return filepath.Join(s.cfg.PartsDir, hashSecret(tok.User)[:16], h+".part"), true
}

type partState struct {
	Hash     string `json:"hash"`
	Received int64  `json:"received"`
}

func (s *Server) handlePartState(w http.ResponseWriter, r *http.Request) {
	_, path, ok := s.partRequest(w, r)
	if !ok {
		return
	}
	var n int64
	if fi, err := os.Stat(path); err == nil {
		n = fi.Size()
	}
	writeJSON(w, http.StatusOK, partState{r.PathValue("hash"), n})
}

func (s *Server) handlePart(w http.ResponseWriter, r *http.Request) {
	_, path, ok := s.partRequest(w, r)
	if !ok {
		return
	}
	off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || off < 0 {
		writeErr(w, http.StatusBadRequest, "offset: give the byte offset of this part")
		return
	}
	s.partsMu.Lock() // one writer of parts at a time
	defer s.partsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	if off != fi.Size() {
		writeJSON(w, http.StatusConflict, struct {
			Error    string `json:"error"`
			Received int64  `json:"received"`
		}{fmt.Sprintf("part at offset %d, the upload has %d bytes: send from there", off, fi.Size()), fi.Size()})
		return
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	room := s.cfg.Limits.MaxBytes - off
	n, err := io.Copy(f, io.LimitReader(r.Body, room+1))
	if n > room {
		f.Truncate(off)
		writeErr(w, http.StatusRequestEntityTooLarge, "the bundle would exceed the limit of %d bytes", s.cfg.Limits.MaxBytes)
		return
	}
	if err != nil {
		// Keep what arrived whole? Not knowing where the body broke, go
		// back to the part's start: the client resends it.
		f.Truncate(off)
		writeErr(w, http.StatusBadRequest, "part interrupted after %d bytes: send it again from offset %d", n, off)
		return
	}
	writeJSON(w, http.StatusOK, partState{r.PathValue("hash"), off + n})
}

func (s *Server) handlePartComplete(w http.ResponseWriter, r *http.Request) {
	tok, path, ok := s.partRequest(w, r)
	if !ok {
		return
	}
	if !s.allowUpload(tok.User) {
		writeErr(w, http.StatusTooManyRequests, "user %s: over %d uploads in the last hour", tok.User, s.cfg.UploadsPerHour)
		return
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		writeErr(w, http.StatusNotFound, "no parts of %s received", r.PathValue("hash"))
		return
	} else if err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != r.PathValue("hash") {
		f.Close()
		os.Remove(path)
		writeErr(w, http.StatusBadRequest, "the parts hash to %s, not %s: upload again from the start", got, r.PathValue("hash"))
		return
	}
	f.Seek(0, io.SeekStart)
	defer func() { f.Close(); os.Remove(path) }()
	s.accept(w, r, tok, f, r.PathValue("hash"))
}
