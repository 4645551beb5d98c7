// Command fledge is the in-cluster manager: the admission webhooks, the
// router that runs rollouts (on the elected leader), the webhook
// certificates, /metrics, /healthz and /readyz.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	// The image holds the binary alone: Prometheus over HTTPS is verified
	// against these roots when the system has none.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/fledge-dev/fledge/certs"
	"github.com/fledge-dev/fledge/policy"
	"github.com/fledge-dev/fledge/rollout"
	"github.com/fledge-dev/fledge/router"
	"github.com/fledge-dev/fledge/webhook"
)

// options are the manager's flags.
type options struct {
	namespace      string
	serviceName    string
	secretName     string
	stateKeySecret string
	stateKeyLife   time.Duration
	webhookHost    string
	webhookPort    int
	webhookURL     string
	certDir        string
	metricsAddr    string
	probeAddr      string
	leaderElection bool
	routerWorkers  int
}

func main() {
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "fledge-system"), "fledge's own namespace: its Secret and Lease live there and its objects are never intercepted (env POD_NAMESPACE)")
	fs.StringVar(&o.serviceName, "service-name", "fledge-webhook", "the Service in front of the webhook server; its DNS names are certified")
	fs.StringVar(&o.secretName, "secret-name", "fledge-webhook-tls", "the Secret holding the webhook's CA and serving certificate, shared by every replica")
	fs.StringVar(&o.stateKeySecret, "state-key-secret", certs.DefaultStateKeySecretName, "the Secret holding the keys that seal fledge's rollout state, shared by every replica; only fledge may read it")
	fs.DurationVar(&o.stateKeyLife, "state-key-lifetime", certs.DefaultStateKeyLifetime, "how long a state key signs before a new one is made, and how long it is still accepted after that")
	fs.StringVar(&o.webhookHost, "webhook-host", "", "address the webhook server listens on (default: all)")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the webhook server")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "register the webhooks at this https URL instead of the Service (the lab: https://127.0.0.1:PORT); the manager then creates the webhook configurations itself")
	fs.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "writable directory where the webhook server reads tls.crt and tls.key")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of /metrics (0 disables)")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElection, "leader-elect", true, "elect a leader among replicas (the router acts only on the leader; every replica serves the webhook)")
	fs.IntVar(&o.routerWorkers, "router-workers", 4, "rollouts the router reconciles at once; one rollout is never reconciled by two workers at a time")
	config.RegisterFlags(fs)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `fledge is the in-cluster manager of fledge: the admission webhooks that turn
a Deployment's new template into a paused canary rollout, the router that
runs rollouts (on the elected leader), the webhook certificates, /metrics,
/healthz and /readyz. manifests/ installs it; the lab runs it with --webhook-url.

Flags:
`)
		fs.PrintDefaults()
	}
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "fledge:", err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), o); err != nil {
		ctrl.Log.Error(err, "fledge stopped")
		os.Exit(1)
	}
}

// validate checks the flags that can be checked before starting.
func (o options) validate() error {
	if o.routerWorkers < 1 {
		return fmt.Errorf("--router-workers %d: want 1 or more", o.routerWorkers)
	}
	return nil
}

func run(ctx context.Context, o options) error {
	log := ctrl.Log.WithName("fledge")
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	self, err := whoAmI(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("starting", "identity", self, "namespace", o.namespace)

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElection,
		LeaderElectionID:              "fledge",
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		// The lease is released once the runnables have stopped, or this
		// long after SIGTERM if one has not: within the 15s the pod has
		// after its 5s preStop sleep (manifests/deployment.yaml), so a
		// graceful stop hands over at once even then, not after the lease
		// runs out.
		GracefulShutdownTimeout: ptr.To(10 * time.Second),
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host:    o.webhookHost,
			Port:    o.webhookPort,
			CertDir: o.certDir,
			TLSOpts: []func(*tls.Config){certs.RequireTLS12},
		}),
		Cache: cache.Options{DefaultTransform: router.StripUnread, ByObject: map[client.Object]cache.ByObject{
			// Of ConfigMaps and pods, only policy ConfigMaps and canary pods
			// are read, so only they are cached.
			&corev1.ConfigMap{}: {Label: labels.SelectorFromSet(labels.Set{policy.Label: "true"})},
			&corev1.Pod{}:       {Label: labels.SelectorFromSet(labels.Set{rollout.LabelTrack: rollout.TrackCanary})},
		}},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	// The rotator writes Secrets and webhook configurations, which the
	// manager's cache does not hold: it gets a direct client.
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	rotatorOpts := certs.Options{
		Namespace:             o.namespace,
		SecretName:            o.secretName,
		ServiceName:           o.serviceName,
		CertDir:               o.certDir,
		MutatingWebhookName:   webhook.MutatingConfigurationName,
		ValidatingWebhookName: webhook.ValidatingConfigurationName,
	}
	if o.webhookURL != "" {
		u, err := url.Parse(o.webhookURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("--webhook-url %q: want https://HOST:PORT", o.webhookURL)
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil {
			rotatorOpts.IPs = []net.IP{ip}
		} else {
			rotatorOpts.DNSNames = []string{u.Hostname()}
		}
	}
	rotator, err := certs.New(direct, rotatorOpts)
	if err != nil {
		return err
	}
	if o.webhookURL != "" {
		if err := registerWebhooks(ctx, direct, webhook.Target{Namespace: o.namespace, URL: o.webhookURL, Self: self}); err != nil {
			return err
		}
	}
	// One pass before serving, so the webhook starts with a certificate and
	// the configurations hold its CA.
	if err := rotator.Rotate(ctx); err != nil {
		return err
	}
	if err := mgr.Add(rotator); err != nil {
		return err
	}
	if o.webhookURL == "" {
		warnUnlessNotSelf(ctx, direct, self)
	}
	// The state keys are loaded before the webhook serves: a rollout's
	// state is sealed from its first write.
	keys, err := certs.NewStateKeys(direct, certs.StateKeysOptions{Namespace: o.namespace, SecretName: o.stateKeySecret, Lifetime: o.stateKeyLife})
	if err != nil {
		return err
	}
	if err := keys.Load(ctx); err != nil {
		return err
	}
	if err := mgr.Add(keys); err != nil {
		return err
	}

	// Start the informers the webhook reads with the cache, not at the
	// first admission: policies, and Services (a rollout warns at apply of
	// a Service that would miss the canary).
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &corev1.Service{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	admissionSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fledge_admission_duration_seconds",
		Help:    "Time the Deployment webhook took to decide an admission.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05},
	})
	metrics.Registry.MustRegister(admissionSeconds)
	server := mgr.GetWebhookServer()
	server.Register(webhook.DeploymentsPath, &admission.Webhook{Handler: &webhook.Deployments{
		Reader:  mgr.GetCache(),
		Self:    self,
		Keys:    keys,
		Clock:   clock.RealClock{},
		Observe: func(d time.Duration) { admissionSeconds.Observe(d.Seconds()) },
	}})
	server.Register(webhook.PoliciesPath, &admission.Webhook{Handler: webhook.Policies{}})

	r := &router.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Events:    mgr.GetEventRecorder("fledge"),
		Clock:     clock.RealClock{},
		Analyzer:  policy.NewAnalyzer(nil),
		Metrics:   router.NewMetrics(metrics.Registry),
		Keys:      keys,
		Workers:   o.routerWorkers,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready only when the webhook serves, with a valid certificate.
	if err := mgr.AddReadyzCheck("webhook", server.StartedChecker()); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("certificate", rotator.Ready); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("state-key", keys.Ready); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// whoAmI asks the apiserver who fledge is, so that the webhook lets fledge's
// own writes pass whatever identity it was given (a ServiceAccount in a
// cluster, a static token in the lab).
func whoAmI(ctx context.Context, cfg *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("learn fledge's own identity (SelfSubjectReview): %w", err)
	}
	if review.Status.UserInfo.Username == "" {
		return "", errors.New("learn fledge's own identity: the apiserver returned no username")
	}
	return review.Status.UserInfo.Username, nil
}

// warnUnlessNotSelf says, once at start, when the installed Deployment
// webhooks are called for fledge's own writes: a namespace or
// ServiceAccount changed by an overlay, and webhooks.yaml not regenerated.
// Those writes still pass (the handler lets them), at an admission each,
// and stop while the webhook is down.
func warnUnlessNotSelf(ctx context.Context, c client.Client, self string) {
	var m admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: webhook.MutatingConfigurationName}, &m); err != nil {
		return // the rotator reports a missing configuration
	}
	want := webhook.NotSelfExpression(self)
	for _, w := range m.Webhooks {
		if !slices.ContainsFunc(w.MatchConditions, func(mc admissionregistrationv1.MatchCondition) bool { return mc.Expression == want }) {
			ctrl.Log.WithName("fledge").Info("The webhook is called for fledge's own writes: add the match condition to every webhook of the MutatingWebhookConfiguration, or regenerate manifests/webhooks.yaml for this identity",
				"webhook", w.Name, "condition", webhook.NotSelfCondition, "expression", want)
			return
		}
	}
}

// registerWebhooks creates or updates the webhook configurations for a
// manager reached by URL, keeping the caBundle the rotator injected.
func registerWebhooks(ctx context.Context, c client.Client, t webhook.Target) error {
	wantM, wantV := webhook.Configurations(t)
	m := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: wantM.Name}}
	if err := register(ctx, c, m, func() {
		m.Webhooks = keepBundle(m.Webhooks, wantM.Webhooks, func(w *admissionregistrationv1.MutatingWebhook) *[]byte { return &w.ClientConfig.CABundle })
	}); err != nil {
		return err
	}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: wantV.Name}}
	return register(ctx, c, v, func() {
		v.Webhooks = keepBundle(v.Webhooks, wantV.Webhooks, func(w *admissionregistrationv1.ValidatingWebhook) *[]byte { return &w.ClientConfig.CABundle })
	})
}

// register creates or updates one webhook configuration.
func register(ctx context.Context, c client.Client, obj client.Object, set func()) error {
	if _, err := controllerutil.CreateOrUpdate(ctx, c, obj, func() error { set(); return nil }); err != nil {
		return fmt.Errorf("register webhook configuration %s: %w", obj.GetName(), err)
	}
	return nil
}

// keepBundle is want with the caBundle that have's webhooks carry.
func keepBundle[W any](have, want []W, bundle func(*W) *[]byte) []W {
	var ca []byte
	if len(have) > 0 {
		ca = *bundle(&have[0])
	}
	out := append([]W(nil), want...)
	for i := range out {
		*bundle(&out[i]) = ca
	}
	return out
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
