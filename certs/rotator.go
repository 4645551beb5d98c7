package certs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Defaults for Options. A year-long CA renewed at two thirds rolls over
// about every eight months; 90-day serving certificates renewed at day 60
// follow the lifetime public CAs use.
const (
	DefaultCALifetime      = 365 * 24 * time.Hour
	DefaultServingLifetime = 90 * 24 * time.Hour
	DefaultInterval        = 10 * time.Minute
)

// retryInterval is how soon a pass is repeated after a failure or while a
// webhook configuration is missing: with failurePolicy Fail, a configuration
// created without its caBundle refuses every call until the next pass.
const retryInterval = 30 * time.Second

// Options configure a Rotator. Namespace, SecretName, ServiceName and CertDir
// are required; the rest have defaults.
type Options struct {
	// Namespace is fledge's namespace, where the Secret and the webhook
	// Service live.
	Namespace string
	// SecretName is the Secret that holds the CA and the serving pair.
	SecretName string
	// ServiceName is the webhook's Service: its in-cluster DNS names are
	// certified (see ServiceDNSNames).
	ServiceName string
	// DNSNames and IPs are certified in addition, e.g. 127.0.0.1 for a
	// webhook reached through a local port in the lab.
	DNSNames []string
	IPs      []net.IP
	// CertDir is where this replica's webhook server reads tls.crt and
	// tls.key; it must be writable (an emptyDir, not a Secret volume).
	CertDir string
	// MutatingWebhookName and ValidatingWebhookName name the configurations
	// that receive the caBundle; an empty name is skipped.
	MutatingWebhookName   string
	ValidatingWebhookName string
	// CALifetime and ServingLifetime default to DefaultCALifetime and
	// DefaultServingLifetime. A certificate is renewed two thirds into its
	// lifetime.
	CALifetime      time.Duration
	ServingLifetime time.Duration
	// Interval is the time between passes (DefaultInterval), and also how
	// long a new CA waits before it signs (see doc.go).
	Interval time.Duration
	// Clock defaults to the real clock; tests pass a fake one.
	Clock clock.Clock
}

// Rotator keeps the webhook's TLS material valid: it is a
// controller-runtime Runnable that runs a pass at start and every Interval.
// It is not leader-elected, because every replica must write its own cert
// dir.
type Rotator struct {
	client   client.Client
	opts     Options
	clock    clock.Clock
	dnsNames []string
}

// New checks the options and fills the defaults. The client should read from
// the API server rather than from the manager's cache (see doc.go).
func New(c client.Client, opts Options) (*Rotator, error) {
	if c == nil {
		return nil, errors.New("certs: options: no client")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("certs: options: %w", err)
	}
	names := ServiceDNSNames(opts.ServiceName, opts.Namespace)
	for _, n := range opts.DNSNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	opts.IPs = slices.Clone(opts.IPs)
	return &Rotator{client: c, opts: opts, clock: opts.Clock, dnsNames: names}, nil
}

func (o Options) withDefaults() Options {
	if o.CALifetime == 0 {
		o.CALifetime = DefaultCALifetime
	}
	if o.ServingLifetime == 0 {
		o.ServingLifetime = DefaultServingLifetime
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// validate refuses options under which renewal cannot keep up: the last
// third of a serving certificate's lifetime must hold at least two passes
// (one to publish a new CA, one to sign with it), and a serving certificate
// may not outlive its CA.
func (o Options) validate() error {
	switch {
	case o.Namespace == "":
		return errors.New("namespace is empty")
	case o.SecretName == "":
		return errors.New("secret name is empty")
	case o.ServiceName == "":
		return errors.New("service name is empty")
	case o.CertDir == "":
		return errors.New("cert dir is empty")
	case o.Interval < 0:
		return fmt.Errorf("interval %s is negative", o.Interval)
	case o.ServingLifetime < 6*o.Interval:
		return fmt.Errorf("serving lifetime %s is shorter than 6 intervals of %s", o.ServingLifetime, o.Interval)
	case o.CALifetime < o.ServingLifetime:
		return fmt.Errorf("CA lifetime %s is shorter than the serving lifetime %s", o.CALifetime, o.ServingLifetime)
	}
	return nil
}

// NeedLeaderElection is false: every replica writes its own cert dir, and
// the Secret is written with optimistic concurrency.
func (r *Rotator) NeedLeaderElection() bool {
	return false
}

// Start runs a pass at once, then one every Interval until ctx is done. A
// failed pass is logged and retried sooner rather than returned: an error
// would stop the whole manager, while the current pair stays valid for
// weeks.
func (r *Rotator) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("certs")
	ctx = logf.IntoContext(ctx, log)
	log.Info("Starting certificate rotation", "secret", r.secretKey().String(), "certDir", r.opts.CertDir, "interval", r.opts.Interval)
	runPasses(ctx, r.clock, r.opts.Interval, log, "Certificate pass failed", r.pass)
	return nil
}

// Rotate runs one pass. main calls it before the manager starts, because
// the webhook server needs the cert dir filled when it starts.
func (r *Rotator) Rotate(ctx context.Context) error {
	_, err := r.pass(ctx)
	return err
}

// pass stores the Secret, publishes its bundle, then serves its pair, in
// that order (see doc.go). It reports whether every webhook configuration
// was found. It is cut off after half an Interval, which bounds how late a
// pass can publish a bundle it read.
func (r *Rotator) pass(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Interval/2)
	defer cancel()
	st, err := r.settleSecret(ctx)
	if err != nil {
		return false, err
	}
	missing, err := r.inject(ctx, EncodeCerts(st.trust...))
	if err != nil {
		return false, err
	}
	for _, m := range missing {
		logf.FromContext(ctx).Info("Webhook configuration not found; its caBundle is injected on a later pass", "configuration", m)
	}
	if err := r.writeCertDir(ctx, st.serving); err != nil {
		return false, err
	}
	return len(missing) == 0, nil
}

// settleSecret brings the Secret to a valid state and returns that state.
// Losing a race to another replica (AlreadyExists on create, Conflict on
// update) means re-reading what it wrote and planning again, which normally
// finds nothing left to do.
func (r *Rotator) settleSecret(ctx context.Context) (state, error) {
	var stored state
	lostRace := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(retry.DefaultRetry, lostRace, func() error {
		st, err := r.reconcileSecret(ctx)
		stored = st
		return err
	})
	return stored, err
}

// reconcileSecret is one observe → plan → store round on the Secret.
func (r *Rotator) reconcileSecret(ctx context.Context) (state, error) {
	log := logf.FromContext(ctx).WithValues("secret", r.secretKey().String())
	secret, err := r.loadSecret(ctx)
	if err != nil {
		return state{}, err
	}
	cur, problems := decodeSecret(secret)
	if secret != nil && len(problems) > 0 {
		log.Info("Secret holds unusable parts; replacing them", "problems", problems)
	}
	published, err := r.published(ctx, cur.signer)
	if err != nil {
		return state{}, err
	}
	d, err := plan(cur, published, r.policy(r.clock.Now()))
	if err != nil {
		return state{}, fmt.Errorf("certs: renew secret %s: %w", r.secretKey(), err)
	}
	if d.changed {
		if err := r.storeSecret(ctx, secret, d.next); err != nil {
			return state{}, err
		}
	}
	for _, n := range d.notes {
		log.Info(n)
	}
	return d.next, nil
}

func (r *Rotator) policy(now time.Time) policy {
	return policy{
		now:             now,
		caName:          fmt.Sprintf("%s-ca@%d", r.opts.ServiceName, now.Unix()),
		caLifetime:      r.opts.CALifetime,
		servingLifetime: r.opts.ServingLifetime,
		settle:          r.opts.Interval,
		dnsNames:        r.dnsNames,
		ips:             r.opts.IPs,
	}
}
