package platform

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
)

// Send sends the bundle file at path (content hash hash) to the platform
// at base with token, retrying transport failures and 503s with backoff
// (an upload is idempotent: the same run and content again is a no-op).
// It returns what the platform said, for people; a refusal is an error
// that carries the platform's reason and report.
func Send(ctx context.Context, base, token, path, hash string, sig ...Signature) (string, error) {
	o := SendOptions{}
	if len(sig) > 0 {
		o.Signature = &sig[0]
	}
	return SendWith(ctx, base, token, path, hash, o)
}

// SendOptions are an upload's optional headers.
type SendOptions struct {
	Signature *Signature
	// Job names the job whose run this is (a worker's upload, with a
	// token of scope worker).
	Job string
}

// SendWith is Send with options.
func SendWith(ctx context.Context, base, token, path, hash string, o SendOptions) (string, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > PartThreshold {
		return sendParts(ctx, base, token, path, hash, fi.Size(), o)
	}
	url := strings.TrimSuffix(base, "/") + "/api/uploads"
	var last error
	for attempt, wait := 0, time.Second; attempt < 5; attempt, wait = attempt+1, wait*2 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(wait):
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		fi, _ := f.Stat()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, f)
		if err != nil {
			f.Close()
			return "", err
		}
		req.ContentLength = fi.Size()
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/vnd.lem.bundle")
		req.Header.Set("X-Lem-Content-Hash", hash)
		o.set(req)
		resp, err := http.DefaultClient.Do(req)
		f.Close()
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK:
			var u Upload
			if err := json.Unmarshal(body, &u); err != nil {
				return "", fmt.Errorf("the platform's answer: %v", err)
			}
			return describeUpload(base, u, resp.StatusCode == http.StatusOK), nil
		case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 502 && resp.StatusCode <= 504:
			last = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
			continue
		default:
			return "", refusal(resp, body)
		}
	}
	return "", fmt.Errorf("uploading to %s: %v (gave up after 5 attempts; uploading again is safe)", url, last)
}

func describeUpload(base string, u Upload, again bool) string {
	var b strings.Builder
	if again {
		fmt.Fprintf(&b, "run %s was already verified with this content: nothing to do\n", u.RunID)
	} else if u.Reason == AwaitingModeration {
		fmt.Fprintf(&b, "run %s verified (every figure recomputed from its events); it is public once a moderator approves it\n", u.RunID)
	} else {
		fmt.Fprintf(&b, "run %s verified and published (every figure recomputed from its events)\n", u.RunID)
	}
	if u.Report != nil {
		b.WriteString(formatReport(u.Report))
	}
	fmt.Fprintf(&b, "see %s/runs/%s\n", strings.TrimSuffix(base, "/"), u.RunID)
	return b.String()
}

func formatReport(r *Report) string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-18s %-5s %s\n", c.Name, c.Status, c.Detail)
	}
	for _, m := range r.Mismatches {
		fmt.Fprintf(&b, "  %-28s submitted %s, recomputed %s\n", m.Metric, fmtFloat(m.Submitted), fmtFloat(m.Recomputed))
	}
	return b.String()
}

// Bundles larger than PartThreshold go in parts of PartSize bytes, each
// retried, resuming from the offset the platform has.
var (
	PartThreshold int64 = 32 << 20
	PartSize      int64 = 8 << 20
	retryWait           = time.Second // the first wait after a failure (doubling to 30 s)
)

func sendParts(ctx context.Context, base, token, path, hash string, size int64, o SendOptions) (string, error) {
	url := strings.TrimSuffix(base, "/") + "/api/uploads/parts/" + hash
	do := func(method, u string, body io.Reader, n int64) (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, body)
		if err != nil {
			return nil, nil, err
		}
		req.ContentLength = n
		req.Header.Set("Authorization", "Bearer "+token)
		o.set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		return resp, b, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	failures, wait := 0, retryWait
	retry := func(err error) error {
		failures++
		if failures >= 8 {
			return fmt.Errorf("uploading %s in parts: %v (gave up after %d failures in a row; running lem upload again resumes)", path, err, failures)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
		return nil
	}
	for {
		// Where the platform is.
		resp, body, err := do(http.MethodGet, url, nil, 0)
		if err != nil || resp.StatusCode >= 500 {
			if rerr := retry(fmt.Errorf("%v %s", err, body)); rerr != nil {
				return "", rerr
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return "", refusal(resp, body)
		}
		var st partState
		if err := json.Unmarshal(body, &st); err != nil {
			return "", err
		}
		if st.Received >= size {
			break
		}
		n := min(PartSize, size-st.Received)
		resp, body, err = do(http.MethodPut, fmt.Sprintf("%s?offset=%d", url, st.Received), io.NewSectionReader(f, st.Received, n), n)
		switch {
		case err != nil || resp.StatusCode >= 500 || resp.StatusCode == http.StatusBadRequest && strings.Contains(string(body), "interrupted"):
			if rerr := retry(fmt.Errorf("%v %s", err, body)); rerr != nil {
				return "", rerr
			}
		case resp.StatusCode == http.StatusConflict:
			// Another offset: ask again.
		case resp.StatusCode != http.StatusOK:
			return "", refusal(resp, body)
		default:
			failures, wait = 0, retryWait // progress: count failures afresh
		}
	}
	for {
		resp, body, err := do(http.MethodPost, url+"/complete", nil, 0)
		if err != nil || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 502 {
			if rerr := retry(fmt.Errorf("%v %s", err, body)); rerr != nil {
				return "", rerr
			}
			continue
		}
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return "", refusal(resp, body)
		}
		var u Upload
		if err := json.Unmarshal(body, &u); err != nil {
			return "", fmt.Errorf("the platform's answer: %v", err)
		}
		return describeUpload(base, u, resp.StatusCode == http.StatusOK), nil
	}
}

// refusal turns a refusing answer into an error with the platform's
// reason and report.
func refusal(resp *http.Response, body []byte) error {
	var e apiError
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
	}
	msg := fmt.Sprintf("the platform refused the upload (%s): %s", resp.Status, e.Error)
	if e.Report != nil {
		msg += "\n" + formatReport(e.Report)
	}
	return errors.New(msg)
}

// Signature is an NKey's signature of a bundle's content hash: provenance
// (which host's key vouches for the bundle), recorded by the platform.
type Signature struct {
	Signer string // the NKey's public key
	Sig    []byte // its signature of the hex content hash
}

// Sign signs a content hash with the NKey seed (lem agent's -nats-nkey file).
func Sign(seed []byte, hash string) (Signature, error) {
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return Signature{}, fmt.Errorf("NKey seed: %w", err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return Signature{}, err
	}
	sig, err := kp.Sign([]byte(hash))
	return Signature{pub, sig}, err
}

func (o SendOptions) set(req *http.Request) {
	if o.Job != "" {
		req.Header.Set(JobHeader, o.Job)
	}
	if sig := o.Signature; sig != nil {
		req.Header.Set("X-Lem-Signer", sig.Signer)
		req.Header.Set("X-Lem-Signature", base64.RawURLEncoding.EncodeToString(sig.Sig))
	}
}
