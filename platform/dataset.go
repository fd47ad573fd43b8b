package platform

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/exporters/hfdataset"
)

// The public dataset: every run on the public leaderboard as one Hugging
// Face dataset (lem export -format hf's layout and card, with the
// platform's verification policy in the card), rebuilt on a schedule when
// the board has changed, kept in the platform's object store and served
// at /api/dataset.zip. Pushing it to the Hub is the operator's command
// (docs/platform.md): the platform reaches no network of its own.

// BucketDataset is the object store of the public dataset's latest build.
const BucketDataset = "lem_platform_dataset"

const datasetObject = "public-dataset.zip"

// DatasetInfo describes the latest build.
type DatasetInfo struct {
	BuiltNS    int64  `json:"built_ns"`
	Runs       int    `json:"runs"`
	Bytes      uint64 `json:"bytes"`
	Generation uint64 `json:"generation"` // the board's, when built
}

func (s *Server) datasetStore(ctx context.Context) (jetstream.ObjectStore, error) {
	return s.cfg.State.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BucketDataset,
		Description: "lem platform: the public runs as a Hugging Face dataset (latest build)"})
}

// Dataset returns the latest build's description (false: none yet).
func (s *Server) Dataset(ctx context.Context) (DatasetInfo, bool, error) {
	ob, err := s.datasetStore(ctx)
	if err != nil {
		return DatasetInfo{}, false, err
	}
	info, err := ob.GetInfo(ctx, datasetObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return DatasetInfo{}, false, nil
	}
	if err != nil {
		return DatasetInfo{}, false, err
	}
	d := DatasetInfo{Bytes: info.Size}
	d.BuiltNS, _ = strconv.ParseInt(info.Metadata["built_ns"], 10, 64)
	d.Runs, _ = strconv.Atoi(info.Metadata["runs"])
	d.Generation, _ = strconv.ParseUint(info.Metadata["generation"], 10, 64)
	return d, true, nil
}

// datasetProvenance is the card's section on where the runs come from.
func (s *Server) datasetProvenance() string {
	policy := "Every verified upload is public at once (no moderation on this platform)."
	if s.cfg.Moderate {
		policy = "A verified upload is published only after a moderator approved it; rejected and pending submissions are not here."
	}
	return "Every run in this dataset was on the public leaderboard of an llm-energy-measure results platform when the dataset was built. " +
		"The platform recomputed every figure from the run's raw events (power samples, energy counter readings, token arrivals, requests) " +
		"with the same analytics as `lem analyze`, refused uploads whose submitted figures differed, and ran plausibility checks against " +
		"the hardware profile (power within 0…1.1 × the power limit, counter against the power series per window, idle baseline in the " +
		"profile's band, token counts against the server's usage, clock order); each run's verification column says `verified` (uploaded, " +
		"recomputed, every check passed) or `recomputed` (from the platform's own store). " + policy
}

// BuildDataset exports the public runs into the object store now.
func (s *Server) BuildDataset(ctx context.Context) (DatasetInfo, error) {
	gen := s.board.Generation()
	entries := s.board.All()
	slices.SortFunc(entries, func(a, b Entry) int { return cmp.Compare(a.RunID, b.RunID) })
	var ids []string
	var results []*analytics.RunResult
	for _, e := range entries {
		d, err := s.result(ctx, e.RunID)
		if err != nil {
			return DatasetInfo{}, fmt.Errorf("recomputing run %s: %w", e.RunID, err)
		}
		ids, results = append(ids, e.RunID), append(results, d.result)
	}
	if len(ids) == 0 {
		return DatasetInfo{}, errors.New("no public run to export")
	}
	dir, err := os.MkdirTemp("", "lem-public-dataset-*")
	if err != nil {
		return DatasetInfo{}, err
	}
	defer os.RemoveAll(dir)
	if _, err := hfdataset.Export(ctx, s.cfg.Store, s.cfg.Store, ids, results, dir, s.cfg.ToolVersion, hfdataset.Options{Provenance: s.datasetProvenance()}); err != nil {
		return DatasetInfo{}, err
	}
	var buf bytes.Buffer
	if err := zipDir(&buf, dir, ""); err != nil {
		return DatasetInfo{}, err
	}
	ob, err := s.datasetStore(ctx)
	if err != nil {
		return DatasetInfo{}, err
	}
	info := DatasetInfo{BuiltNS: time.Now().UnixNano(), Runs: len(ids), Bytes: uint64(buf.Len()), Generation: gen}
	_, err = ob.Put(ctx, jetstream.ObjectMeta{Name: datasetObject, Metadata: map[string]string{"built_ns": strconv.FormatInt(info.BuiltNS, 10),
		"runs": strconv.Itoa(info.Runs), "generation": strconv.FormatUint(gen, 10)}}, &buf)
	return info, err
}

// RunDatasetSchedule rebuilds the public dataset every period when the
// board changed since the last build (and once at start when there is
// none), until ctx ends.
func (s *Server) RunDatasetSchedule(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var built uint64
	if d, ok, err := s.Dataset(ctx); err == nil && ok {
		built = d.Generation
	}
	for {
		if gen := s.board.Generation(); gen != built && s.board.Len() > 0 {
			if d, err := s.BuildDataset(ctx); err != nil {
				s.cfg.Log.Warn().Err(err).Msg("public dataset not rebuilt")
			} else {
				built = d.Generation
				s.cfg.Log.Info().Int("runs", d.Runs).Uint64("bytes", d.Bytes).Msg("public dataset rebuilt")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) handleDatasetInfo(w http.ResponseWriter, r *http.Request) {
	d, ok, err := s.Dataset(r.Context())
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
	case !ok:
		writeErr(w, http.StatusNotFound, "the public dataset has not been built yet (it is rebuilt on a schedule: lem web -dataset-every)")
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

func (s *Server) handlePublicDataset(w http.ResponseWriter, r *http.Request) {
	ob, err := s.datasetStore(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	res, err := ob.Get(r.Context(), datasetObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		writeErr(w, http.StatusNotFound, "the public dataset has not been built yet")
		return
	}
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	defer res.Close()
	info, _ := res.Info()
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="lem-public-dataset.zip"`)
	if info != nil {
		w.Header().Set("Content-Length", strconv.FormatUint(info.Size, 10))
	}
	io.Copy(w, res)
}
