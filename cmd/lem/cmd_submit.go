package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/llm-energy-measure/lem/platform"
)

func init() {
	register(&command{
		name: "submit",
		summary: "Submit an experiment file to a results platform to run on a GPU worker of a hardware profile: " +
			"the platform checks it, shows the cost estimate, and queues it once confirmed.",
		usage: "EXPERIMENT.yaml",
		setup: newSubmitCmd,
	})
}

type submitCmd struct {
	to, tokenFile, profile *string
	yes, wait              *bool
}

func newSubmitCmd(fs *flag.FlagSet) func([]string) error {
	opt := &submitCmd{
		to:        fs.String("to", "http://127.0.0.1:8080", "the platform's address"),
		tokenFile: fs.String("token-file", "", "file holding an API token with the read scope (or set LEM_TOKEN)"),
		profile:   fs.String("profile", "", "hardware profile to run on (h200-sxm, l4, …; sim for the simulated GPU)"),
		yes:       fs.Bool("yes", false, "confirm the estimate without asking"),
		wait:      fs.Bool("wait", false, "follow the job until it ends"),
	}
	return opt.run
}

// apiCall makes a JSON request to the platform with a token.
func apiCall(ctx context.Context, method, url, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode >= 300 {
		var e struct {
			Error    string   `json:"error"`
			Problems []string `json:"problems"`
		}
		json.Unmarshal(b, &e)
		msg := strings.TrimSpace(e.Error)
		if msg == "" {
			msg = strings.TrimSpace(string(b))
		}
		for _, p := range e.Problems {
			msg += "\n  " + p
		}
		return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// fmtDur writes seconds as s, min or h.
func fmtDur(s float64) string {
	switch {
	case s < 90:
		return fmt.Sprintf("%.0f s", s)
	case s < 90*60:
		return fmt.Sprintf("%.1f min", s/60)
	}
	return fmt.Sprintf("%.1f h", s/3600)
}

func rng(v [2]float64, unit string, prec int) string {
	return fmt.Sprintf("%.*f–%.*f %s", prec, v[0], prec, v[1], unit)
}

func (opt *submitCmd) run(args []string) error {
	if len(args) != 1 {
		return errUsage
	}
	token, err := apiToken(*opt.tokenFile, "the read scope")
	if err != nil {
		return err
	}
	if *opt.profile == "" {
		return errors.New("-profile: name the hardware profile to run on (sim for the simulated GPU)")
	}
	yaml, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	base := strings.TrimSuffix(*opt.to, "/")
	var job platform.Job
	if _, err := apiCall(ctx, http.MethodPost, base+"/api/jobs", token, map[string]string{"profile": *opt.profile, "experiment": string(yaml)}, &job); err != nil {
		return fmt.Errorf("submitting %s: %w", args[0], err)
	}
	e := job.Estimate
	fmt.Printf("job %s: %s on %s\n", job.ID, job.Experiment, job.Profile)
	fmt.Printf("estimate: %s–%s (%s on %d GPU(s)), energy %s, %s CO₂e\n", fmtDur(e.DurationS[0]), fmtDur(e.DurationS[1]),
		rng(e.GPUHours, "GPU-hours", 2), e.GPUs, rng(e.EnergyKWh, "kWh", 3), rng(e.CO2Kg, "kg", 3))
	if e.Cost != nil {
		fmt.Printf("cost: %s\n", rng(*e.Cost, e.Currency, 2))
	} else {
		fmt.Println("cost: no price set on this platform")
	}
	fmt.Printf("basis: %s\n", e.Basis)
	if !*opt.yes {
		fmt.Print("queue it? [y/N] ")
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			fmt.Printf("not queued; it waits for confirmation (POST %s/api/jobs/%s/confirm)\n", base, job.ID)
			return nil
		}
	}
	if _, err := apiCall(ctx, http.MethodPost, base+"/api/jobs/"+job.ID+"/confirm", token, nil, &job); err != nil {
		return err
	}
	fmt.Printf("queued: %s/jobs/%s\n", base, job.ID)
	if !*opt.wait {
		return nil
	}
	last := ""
	for {
		var st struct {
			platform.Job
			Waiting string `json:"waiting"`
		}
		if _, err := apiCall(ctx, http.MethodGet, base+"/api/jobs/"+job.ID, token, nil, &st); err != nil {
			return err
		}
		if now := st.State + st.Waiting; now != last {
			fmt.Printf("%s %s", time.Now().Format("15:04:05"), st.State)
			if st.Waiting != "" {
				fmt.Printf(" (%s)", st.Waiting)
			}
			fmt.Println()
			last = now
		}
		if st.Done() {
			for _, r := range st.RunIDs {
				fmt.Printf("run %s: %s/runs/%s\n", r, base, r)
			}
			if st.State != platform.JobSucceeded {
				return fmt.Errorf("job %s %s: %s", st.ID, st.State, st.Error)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
