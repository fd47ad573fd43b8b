package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/platform"
	"github.com/llm-energy-measure/lem/store"
)

func init() {
	register(&command{
		name: "web",
		summary: "Serve the results platform: leaderboard, experiment pages with the power timeline, and verified uploads " +
			"(lem upload), every figure recomputed from the raw events; state on embedded JetStream, runs in -parquet or -clickhouse.",
		setup: newWebCmd,
	})
}

// webCmd holds the flags of `lem web`.
type webCmd struct {
	fs                                               *flag.FlagSet
	listen, data                                     *string
	natsListen                                       *string
	natsListenToken                                  *string
	publishLocal                                     *bool
	adminTokenFile                                   *string
	uploadsPerHour                                   *int
	maxBundle                                        *int64
	publicURL                                        *string
	oidcIssuer                                       *string
	oidcClientID                                     *string
	oidcSecretFile                                   *string
	oidcName                                         *string
	ghClientID                                       *string
	ghSecretFile                                     *string
	ghWeb, ghAPI                                     *string
	admins, mods                                     *string
	moderate                                         *bool
	workerTokenFile                                  *string
	smtpAddr, smtpFrom, smtpUser, smtpPwFile, smtpCA *string
	webhookPrivate                                   *bool
	datasetEvery                                     *time.Duration
	gpuHourPrices                                    *string
	kwhPrice                                         *float64
	currency                                         *string
	stc                                              func() store.Config
	logger                                           func() zerolog.Logger
}

func newWebCmd(fs *flag.FlagSet) func([]string) error {
	opt := &webCmd{
		fs:              fs,
		listen:          fs.String("listen", "127.0.0.1:8080", "HTTP address of the platform"),
		data:            fs.String("data", "lem-web", "directory of the platform's JetStream state (<dir>/nats) and, without -parquet or -clickhouse, its store (<dir>/store)"),
		natsListenToken: fs.String("nats-listen-token-file", "", "file holding the token every client of -nats-listen (workers) must present (or set LEM_NATS_LISTEN_TOKEN); workers give it with -nats-token-file"),
		natsListen:      fs.String("nats-listen", "127.0.0.1:-1", "client address of the platform's embedded JetStream (-1: a free port)"),
		publishLocal:    fs.Bool("publish-local", true, "publish the store's own runs that are not yet on the platform (recomputed, marked as not uploaded)"),
		adminTokenFile:  fs.String("admin-token-file", "", "when this file does not exist, create an admin API token (upload, read, admin) and write it there (mode 0600)"),
		workerTokenFile: fs.String("worker-token-file", "", "when this file does not exist, create an API token for GPU workers (worker, upload, read) and write it there (mode 0600)"),
		uploadsPerHour:  fs.Int("uploads-per-hour", 20, "uploads allowed per user per hour"),
		maxBundle:       fs.Int64("max-bundle-bytes", platform.DefaultLimits.MaxBytes, "largest bundle accepted"),
		publicURL:       fs.String("public-url", "", "the platform's address as browsers reach it (sign-in redirects; https:// makes cookies Secure); default http://<listen>"),
		oidcIssuer:      fs.String("oidc-issuer", "", "sign in with this OpenID Connect provider (its issuer URL; discovery at /.well-known/openid-configuration)"),
		oidcClientID:    fs.String("oidc-client-id", "", "the platform's client id at the OpenID Connect provider"),
		oidcSecretFile:  fs.String("oidc-client-secret-file", "", "file holding the OpenID Connect client secret (or set LEM_OIDC_CLIENT_SECRET)"),
		oidcName:        fs.String("oidc-name", "", "the OpenID Connect provider's name on the sign-in button (default: the issuer)"),
		ghClientID:      fs.String("github-client-id", "", "sign in with GitHub: the OAuth app's client id (callback <public-url>/auth/callback/github)"),
		ghSecretFile:    fs.String("github-client-secret-file", "", "file holding the GitHub OAuth app's client secret (or set LEM_GITHUB_CLIENT_SECRET)"),
		ghWeb:           fs.String("github-url", "https://github.com", "GitHub's web address (GitHub Enterprise: yours)"),
		ghAPI:           fs.String("github-api-url", "https://api.github.com", "GitHub's API address (GitHub Enterprise: https://HOST/api/v3)"),
		admins:          fs.String("admins", "", "comma-separated users made admins at sign-in (github:LOGIN, an e-mail, or a user id)"),
		mods:            fs.String("moderators", "", "comma-separated users made moderators at sign-in"),
		gpuHourPrices:   fs.String("gpu-hour-price", "", "job estimates' GPU-hour prices by hardware profile, e.g. h200-sxm=3.5,l4=0.7 (none: estimates show no cost)"),
		kwhPrice:        fs.Float64("kwh-price", 0, "job estimates' electricity price per kWh"),
		currency:        fs.String("currency", "USD", "the prices' currency"),
		smtpAddr:        fs.String("smtp", "", "send e-mail notifications through this SMTP server (host:port; STARTTLS required)"),
		smtpFrom:        fs.String("smtp-from", "lem@localhost", "the notifications' From address"),
		smtpUser:        fs.String("smtp-user", "", "SMTP user; the password from LEM_SMTP_PASSWORD or -smtp-password-file"),
		smtpPwFile:      fs.String("smtp-password-file", "", "file holding the SMTP password"),
		smtpCA:          fs.String("smtp-ca", "", "PEM of the CA that signed the SMTP server's certificate (default: the system's)"),
		webhookPrivate:  fs.Bool("webhook-allow-private", false, "let webhooks reach loopback and private addresses (a lab's internal services)"),
		datasetEvery:    fs.Duration("dataset-every", time.Hour, "rebuild the public dataset (every public run as a Hugging Face dataset, /api/dataset.zip) this often when the board changed; 0: never"),
		moderate:        fs.Bool("moderate", false, "hold every verified upload until a moderator approves it; only approved runs are on the public leaderboard"),
		stc:             storeFlags(fs, "", "Parquet store of the platform's runs (default <data>/store)"),
		logger:          logFlags(fs),
	}
	return opt.run
}

func (opt *webCmd) run(_ []string) error {
	log := opt.logger()
	sc := opt.stc()
	if sc.ClickHouse.Addr == "" && sc.Parquet == "" {
		sc.Parquet = filepath.Join(*opt.data, "store")
	}
	if err := os.MkdirAll(*opt.data, 0o755); err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	natsToken, err := readSecret("LEM_NATS_LISTEN_TOKEN", *opt.natsListenToken, "NATS listen token")
	if err != nil {
		return err
	}
	bb, err := startBackbone(*opt.natsListen, natsToken, filepath.Join(*opt.data, "nats"), sc, log)
	if err != nil {
		return err
	}
	defer bb.stop()
	pub, err := bus.NewPublisher(bb.nc, 0)
	if err != nil {
		return err
	}
	state, err := platform.OpenState(ctx, pub.JetStream())
	if err != nil {
		return err
	}
	st, err := openStore(ctx, sc, false, log)
	if err != nil {
		return err
	}
	defer st.Close()
	lim := platform.DefaultLimits
	lim.MaxBytes = *opt.maxBundle
	public := strings.TrimSuffix(*opt.publicURL, "/")
	if public == "" {
		public = "http://" + *opt.listen
	}
	providers, err := opt.providers(ctx, public)
	if err != nil {
		return err
	}
	jobs, err := platform.OpenJobs(ctx, bb.nc, pub.JetStream(), state, platform.JobsConfig{Log: log})
	if err != nil {
		return err
	}
	smtpPw, err := readSecret("LEM_SMTP_PASSWORD", *opt.smtpPwFile, "SMTP password")
	if err != nil {
		return err
	}
	notifier, err := platform.OpenNotifier(ctx, pub.JetStream(), state, platform.NotifyConfig{PublicURL: public, AllowPrivate: *opt.webhookPrivate,
		SMTP: platform.SMTPConfig{Addr: *opt.smtpAddr, From: *opt.smtpFrom, User: *opt.smtpUser, Password: smtpPw, CAFile: *opt.smtpCA}})
	if err != nil {
		return err
	}
	go func() {
		if err := notifier.Run(ctx); err != nil {
			log.Error().Err(err).Msg("notifications stopped")
		}
	}()
	prices, err := parsePrices(*opt.gpuHourPrices, *opt.kwhPrice, *opt.currency)
	if err != nil {
		return err
	}
	srv, err := platform.New(ctx, platform.Config{Store: st, State: state, Publisher: pub, Limits: lim,
		Stored: func(ctx context.Context) error { return bus.WaitIngested(ctx, pub.JetStream()) }, Jobs: jobs, Prices: prices, Notifier: notifier,
		UploadsPerHour: *opt.uploadsPerHour, ToolVersion: version, Log: log, Providers: providers,
		Admins: splitList(*opt.admins), Moderators: splitList(*opt.mods), SecureCookies: strings.HasPrefix(public, "https://"),
		Moderate: *opt.moderate, WarmOverviews: true, PartsDir: filepath.Join(*opt.data, "parts")})
	if err != nil {
		return err
	}
	if err := ensureToken(ctx, state, *opt.adminTokenFile, "admin", "-admin-token-file", platform.ScopeUpload, platform.ScopeRead, platform.ScopeAdmin); err != nil {
		return err
	}
	if err := ensureToken(ctx, state, *opt.workerTokenFile, "worker", "-worker-token-file", platform.ScopeWorker, platform.ScopeUpload, platform.ScopeRead); err != nil {
		return err
	}
	if *opt.datasetEvery > 0 {
		go srv.RunDatasetSchedule(ctx, *opt.datasetEvery)
	}
	if *opt.publishLocal {
		n, err := srv.PublishLocal(ctx, "local store")
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Printf("published %d runs of %s (recomputed from their events)\n", n, st.Describe())
		}
	}
	ln, err := net.Listen("tcp", *opt.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("lem web: the results platform is at http://%s/ (%d runs; store %s); workers connect to %s\n", ln.Addr(), srv.Board().Len(), st.Describe(), bb.url)
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// providers builds the sign-in providers the flags configure.
func (opt *webCmd) providers(ctx context.Context, public string) ([]platform.Provider, error) {
	var out []platform.Provider
	if *opt.oidcIssuer != "" {
		secret, err := clientSecret("LEM_OIDC_CLIENT_SECRET", *opt.oidcSecretFile, "OpenID Connect client secret")
		if err != nil {
			return nil, err
		}
		if *opt.oidcClientID == "" {
			return nil, errors.New("-oidc-issuer needs -oidc-client-id")
		}
		p, err := platform.NewOIDC(ctx, platform.OIDCConfig{ID: "oidc", Name: *opt.oidcName, Issuer: *opt.oidcIssuer,
			ClientID: *opt.oidcClientID, ClientSecret: secret, RedirectURL: public + "/auth/callback/oidc"})
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if *opt.ghClientID != "" {
		secret, err := clientSecret("LEM_GITHUB_CLIENT_SECRET", *opt.ghSecretFile, "GitHub client secret")
		if err != nil {
			return nil, err
		}
		out = append(out, platform.NewGitHub(platform.GitHubConfig{ClientID: *opt.ghClientID, ClientSecret: secret,
			RedirectURL: public + "/auth/callback/github", WebURL: *opt.ghWeb, APIURL: *opt.ghAPI}))
	}
	return out, nil
}

// clientSecret reads a sign-in provider's client secret (readSecret),
// which must be given.
func clientSecret(env, file, what string) (string, error) {
	v, err := readSecret(env, file, what)
	if err == nil && v == "" {
		err = fmt.Errorf("no %s: give its file or set %s", what, env)
	}
	return v, err
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func init() {
	register(&command{
		name: "upload",
		summary: "Upload a run to a results platform (lem web): its raw events and the results computed from them; " +
			"the platform recomputes every figure and publishes the run only if they match and its checks pass.",
		usage: "RUN_ID",
		setup: newUploadCmd,
	})
}

type uploadCmd struct {
	to, tokenFile *string
	nkey          *string
	keep          *string
	stc           func() store.Config
	logger        func() zerolog.Logger
}

func newUploadCmd(fs *flag.FlagSet) func([]string) error {
	opt := &uploadCmd{
		to:        fs.String("to", "http://127.0.0.1:8080", "the platform's address"),
		tokenFile: fs.String("token-file", "", "file holding an API token with the upload scope (or set LEM_TOKEN)"),
		keep:      fs.String("bundle", "", "also keep the bundle in this file"),
		nkey:      fs.String("nkey", "", "sign the bundle's content hash with the NKey seed in this file (the host's, as lem agent -nats-nkey uses): the platform records the signer"),
		stc:       storeFlags(fs, "", "read the run from the local Parquet store under this directory"),
		logger:    logFlags(fs),
	}
	return opt.run
}

func (opt *uploadCmd) run(args []string) error {
	if len(args) != 1 {
		return errUsage
	}
	token, err := apiToken(*opt.tokenFile, "the upload scope")
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	st, err := openStore(ctx, opt.stc(), false, opt.logger())
	if err != nil {
		return err
	}
	defer st.Close()
	path := *opt.keep
	if path == "" {
		f, err := os.CreateTemp("", "lem-bundle-*.lemb")
		if err != nil {
			return err
		}
		path = f.Name()
		f.Close()
		defer os.Remove(path)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	m, hash, err := platform.WriteBundle(ctx, st, args[0], version, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fi, _ := os.Stat(path)
	fmt.Printf("bundle of run %s: %d events, %d bytes, sha256 %s\n", m.RunID, m.Events, fi.Size(), hash)
	var sigs []platform.Signature
	if *opt.nkey != "" {
		seed, err := os.ReadFile(*opt.nkey)
		if err != nil {
			return err
		}
		sig, err := platform.Sign(seed, hash)
		if err != nil {
			return err
		}
		fmt.Printf("signed by NKey %s\n", sig.Signer)
		sigs = append(sigs, sig)
	}
	res, err := platform.Send(ctx, *opt.to, token, path, hash, sigs...)
	if err != nil {
		return err
	}
	fmt.Print(res)
	return nil
}

// parsePrices reads -gpu-hour-price PROFILE=PRICE,… into job estimates'
// prices.
func parsePrices(list string, kwh float64, currency string) (platform.Prices, error) {
	p := platform.Prices{GPUHour: map[string]float64{}, PerKWh: kwh, Currency: currency}
	for _, kv := range splitList(list) {
		k, v, ok := strings.Cut(kv, "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || f < 0 {
			return p, fmt.Errorf("-gpu-hour-price: %q is not PROFILE=PRICE", kv)
		}
		p.GPUHour[k] = f
	}
	if kwh < 0 {
		return p, errors.New("-kwh-price: negative")
	}
	return p, nil
}

// ensureToken creates an API token for user with scopes and writes it to
// file (mode 0600) when file is named and does not exist yet.
func ensureToken(ctx context.Context, state *platform.State, file, user, flagName string, scopes ...string) error {
	if file == "" {
		return nil
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	secret, _, err := state.CreateToken(ctx, user, "created by lem web "+flagName, scopes, 0)
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("created an API token for %s (%s) in %s\n", user, strings.Join(scopes, ", "), file)
	return nil
}

// apiToken reads the platform API token (LEM_TOKEN, else the file), which
// must be given; need says what it must allow.
func apiToken(file, need string) (string, error) {
	token, err := readSecret("LEM_TOKEN", file, "API token")
	if err == nil && token == "" {
		err = fmt.Errorf("no API token: give -token-file or set LEM_TOKEN (a token with %s)", need)
	}
	return token, err
}
