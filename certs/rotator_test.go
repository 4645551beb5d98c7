package certs

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

const (
	testNamespace  = "fledge-system"
	testSecretName = "fledge-webhook-tls"
	mutatingName   = "fledge"
	validatingName = "fledge-policy"
)

func testContext(t *testing.T) context.Context {
	return logf.IntoContext(t.Context(), testr.New(t))
}

func mutatingConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: mutatingName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "deployments.fledge.dev"},
			{Name: "canaries.fledge.dev"},
		},
	}
}

func validatingConfig() *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: validatingName},
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "policies.fledge.dev"}},
	}
}

func newFakeClient(objs ...client.Object) client.WithWatch {
	return fake.NewClientBuilder().WithObjects(objs...).Build()
}

func newTestRotator(t *testing.T, c client.Client, clk clock.Clock, dir string, edits ...func(*Options)) *Rotator {
	t.Helper()
	opts := Options{
		Namespace:             testNamespace,
		SecretName:            testSecretName,
		ServiceName:           "fledge-webhook",
		IPs:                   testIPs,
		CertDir:               dir,
		MutatingWebhookName:   mutatingName,
		ValidatingWebhookName: validatingName,
		Clock:                 clk,
	}
	for _, edit := range edits {
		edit(&opts)
	}
	r, err := New(c, opts)
	require.NoError(t, err)
	return r
}

func getSecret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: testSecretName}, &s))
	return &s
}

// caBundles returns the caBundle of every webhook entry, by configuration.
func caBundles(t *testing.T, c client.Client) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	for _, obj := range []client.Object{&admissionregistrationv1.MutatingWebhookConfiguration{}, &admissionregistrationv1.ValidatingWebhookConfiguration{}} {
		name := mutatingName
		if _, ok := obj.(*admissionregistrationv1.ValidatingWebhookConfiguration); ok {
			name = validatingName
		}
		if err := c.Get(t.Context(), client.ObjectKey{Name: name}, obj); err != nil {
			continue
		}
		for _, cc := range clientConfigs(obj) {
			out[name] = append(out[name], cc.CABundle)
		}
	}
	return out
}

func resourceVersions(t *testing.T, c client.Client) []string {
	t.Helper()
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Name: mutatingName}, m))
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Name: validatingName}, v))
	return []string{getSecret(t, c).ResourceVersion, m.ResourceVersion, v.ResourceVersion}
}

func readDir(t *testing.T, dir string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	require.NoError(t, err)
	keyPEM, err = os.ReadFile(filepath.Join(dir, keyFile))
	require.NoError(t, err)
	return certPEM, keyPEM
}

func TestRotatorIsAManagerRunnableOnEveryReplica(t *testing.T) {
	r := newTestRotator(t, newFakeClient(), clock.RealClock{}, t.TempDir())
	var _ manager.Runnable = r
	var _ manager.LeaderElectionRunnable = r
	var _ healthz.Checker = r.Ready
	assert.False(t, r.NeedLeaderElection())
}

func TestFirstPassStoresInjectsAndWrites(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient(mutatingConfig(), validatingConfig())
	dir := t.TempDir()
	r := newTestRotator(t, c, fc, dir, func(o *Options) { o.ServingLifetime = 30 * day; o.CALifetime = 200 * day })

	require.NoError(t, r.Rotate(ctx))

	s := getSecret(t, c)
	assert.Equal(t, corev1.SecretTypeTLS, s.Type)
	assert.ElementsMatch(t, []string{"tls.crt", "tls.key", "ca.crt", "ca-signer.crt", "ca.key"}, keysOf(s.Data))
	serving, err := ParseKeyPair(s.Data["tls.crt"], s.Data["tls.key"])
	require.NoError(t, err)
	signer, err := ParseKeyPair(s.Data["ca-signer.crt"], s.Data["ca.key"])
	require.NoError(t, err)
	assert.Equal(t, t0.Add(30*day), serving.Cert.NotAfter)
	assert.Equal(t, t0.Add(200*day), signer.Cert.NotAfter)
	assert.Equal(t, EncodeCerts(signer.Cert), s.Data["ca.crt"])
	assert.NoError(t, verifyFor(serving.Cert, "fledge-webhook.fledge-system.svc", t0, signer.Cert))

	bundles := caBundles(t, c)
	assert.Equal(t, [][]byte{s.Data["ca.crt"], s.Data["ca.crt"]}, bundles[mutatingName], "every mutating webhook")
	assert.Equal(t, [][]byte{s.Data["ca.crt"]}, bundles[validatingName], "every validating webhook")

	certPEM, keyPEM := readDir(t, dir)
	assert.Equal(t, s.Data["tls.crt"], certPEM)
	assert.Equal(t, s.Data["tls.key"], keyPEM)
	info, err := os.Stat(filepath.Join(dir, keyFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	assert.NoError(t, r.Ready(nil))
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestPassWithValidSecretWritesNothing(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient(mutatingConfig(), validatingConfig())
	dir := t.TempDir()
	r := newTestRotator(t, c, fc, dir)
	require.NoError(t, r.Rotate(ctx))
	versions := resourceVersions(t, c)
	before, err := os.Stat(filepath.Join(dir, certFile))
	require.NoError(t, err)

	fc.Step(59 * day)
	require.NoError(t, r.Rotate(ctx))

	assert.Equal(t, versions, resourceVersions(t, c), "secret and configurations untouched")
	after, err := os.Stat(filepath.Join(dir, certFile))
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, after), "tls.crt not replaced")
}

func TestSecondReplicaServesTheSamePair(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient(mutatingConfig(), validatingConfig())
	dirA, dirB := t.TempDir(), t.TempDir()
	require.NoError(t, newTestRotator(t, c, fc, dirA).Rotate(ctx))
	versions := resourceVersions(t, c)

	fc.Step(time.Minute)
	require.NoError(t, newTestRotator(t, c, fc, dirB).Rotate(ctx))

	assert.Equal(t, versions, resourceVersions(t, c))
	certA, keyA := readDir(t, dirA)
	certB, keyB := readDir(t, dirB)
	assert.Equal(t, certA, certB)
	assert.Equal(t, keyA, keyB)
}

func TestMissingWebhookConfigurationIsNotAnError(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient(mutatingConfig())
	dir := t.TempDir()
	r := newTestRotator(t, c, fc, dir)

	complete, err := r.pass(ctx)
	require.NoError(t, err)
	assert.False(t, complete, "the validating configuration is retried")
	bundle := getSecret(t, c).Data["ca.crt"]
	assert.Equal(t, map[string][][]byte{mutatingName: {bundle, bundle}}, caBundles(t, c))
	assert.NoError(t, r.Ready(nil), "the pair is served anyway")

	require.NoError(t, c.Create(ctx, validatingConfig()))
	complete, err = r.pass(ctx)
	require.NoError(t, err)
	assert.True(t, complete)
	assert.Equal(t, [][]byte{bundle}, caBundles(t, c)[validatingName])
}

func TestReplicaThatLosesTheCreateRaceServesTheWinnersPair(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient(mutatingConfig(), validatingConfig())
	dirWinner, dirLoser := t.TempDir(), t.TempDir()
	winner := newTestRotator(t, base, fc, dirWinner)
	raced := false
	c := interceptor.NewClient(base, interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && !raced {
				raced = true
				require.NoError(t, winner.Rotate(ctx))
			}
			return cl.Create(ctx, obj, opts...)
		},
	})

	require.NoError(t, newTestRotator(t, c, fc, dirLoser).Rotate(ctx))

	require.True(t, raced)
	s := getSecret(t, base)
	certW, keyW := readDir(t, dirWinner)
	certL, keyL := readDir(t, dirLoser)
	assert.Equal(t, s.Data["tls.crt"], certW)
	assert.Equal(t, certW, certL)
	assert.Equal(t, keyW, keyL)
}

func TestReplicaThatLosesAnUpdateRaceServesTheWinnersRenewal(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient(mutatingConfig(), validatingConfig())
	dirWinner, dirLoser := t.TempDir(), t.TempDir()
	winner := newTestRotator(t, base, fc, dirWinner)
	require.NoError(t, winner.Rotate(ctx))
	raced := false
	c := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && !raced {
				raced = true
				require.NoError(t, winner.Rotate(ctx))
			}
			return cl.Update(ctx, obj, opts...)
		},
	})
	loser := newTestRotator(t, c, fc, dirLoser)

	fc.Step(60 * day) // the serving certificate is due
	require.NoError(t, loser.Rotate(ctx))

	require.True(t, raced)
	s := getSecret(t, base)
	serving, err := ParseKeyPair(s.Data["tls.crt"], s.Data["tls.key"])
	require.NoError(t, err)
	assert.Equal(t, t0.Add(60*day), IssuedAt(serving.Cert), "renewed once")
	certW, _ := readDir(t, dirWinner)
	certL, _ := readDir(t, dirLoser)
	assert.Equal(t, s.Data["tls.crt"], certW, "the winner's renewal is stored")
	assert.Equal(t, certW, certL)
}

func TestInjectionRetriesOnConflictAndKeepsOtherEdits(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	base := newFakeClient(mutatingConfig(), validatingConfig())
	raced := false
	c := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok && !raced {
				raced = true
				other := mutatingConfig()
				require.NoError(t, cl.Get(ctx, client.ObjectKeyFromObject(other), other))
				other.Labels = map[string]string{"edited-by": "kubectl"}
				require.NoError(t, cl.Update(ctx, other))
			}
			return cl.Update(ctx, obj, opts...)
		},
	})

	require.NoError(t, newTestRotator(t, c, fc, t.TempDir()).Rotate(ctx))

	require.True(t, raced)
	got := mutatingConfig()
	require.NoError(t, base.Get(ctx, client.ObjectKeyFromObject(got), got))
	assert.Equal(t, "kubectl", got.Labels["edited-by"])
	bundle := getSecret(t, base).Data["ca.crt"]
	assert.Equal(t, [][]byte{bundle, bundle}, caBundles(t, base)[mutatingName])
}

// publishedCAs is the bundle the apiserver holds: the caBundle of the
// webhook entries, which must all agree.
func publishedCAs(t *testing.T, c client.Client) []*x509.Certificate {
	t.Helper()
	var first []byte
	for _, bundles := range caBundles(t, c) {
		for _, b := range bundles {
			if first == nil {
				first = b
			}
			require.Equal(t, first, b, "every webhook entry holds the same bundle")
		}
	}
	if first == nil {
		return nil
	}
	cas, err := ParseCerts(first)
	require.NoError(t, err)
	return cas
}

func servedCert(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	certPEM, _ := readDir(t, dir)
	certs, err := ParseCerts(certPEM)
	require.NoError(t, err)
	return certs[0]
}

// Two replicas pass once a day for 800 days, through three CA rollovers.
// After every pass, what each replica serves verifies against the bundle
// the apiserver holds, and what the replica that just passed serves also
// verified against the bundle held before its pass: the order of publishing
// and serving cannot open a gap.
func TestCARolloverKeepsEveryServedCertificateTrusted(t *testing.T) {
	ctx := testContext(t)
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient(mutatingConfig(), validatingConfig())
	dirs := []string{t.TempDir(), t.TempDir()}
	var replicas []*Rotator
	for _, dir := range dirs {
		replicas = append(replicas, newTestRotator(t, c, fc, dir, func(o *Options) { o.Interval = day }))
	}
	const service = "fledge-webhook.fledge-system.svc"

	type observation struct {
		day    int
		cas    int
		issuer string
	}
	var seen []observation
	issuers := map[string]bool{}
	for d := 0; d <= 800; d++ {
		for i, r := range replicas {
			before := publishedCAs(t, c)
			require.NoError(t, r.Rotate(ctx), "day %d replica %d", d, i)
			after := publishedCAs(t, c)
			for j, dir := range dirs {
				if _, err := os.Stat(filepath.Join(dir, certFile)); err != nil {
					continue
				}
				require.NoError(t, verifyFor(servedCert(t, dir), service, fc.Now(), after...),
					"day %d after replica %d's pass: replica %d's certificate against the published bundle", d, i, j)
			}
			served := servedCert(t, dirs[i])
			if before != nil {
				require.NoError(t, verifyFor(served, service, fc.Now(), before...),
					"day %d: replica %d serves a certificate the previous bundle did not trust", d, i)
			}
			seen = append(seen, observation{day: d, cas: len(after), issuer: served.Issuer.CommonName})
			issuers[served.Issuer.CommonName] = true
		}
		fc.Step(day)
	}

	// seen interleaves the two replicas: seen[k-2] is the same replica's
	// previous pass.
	overlaps, switches, switchesDuringOverlap := 0, 0, 0
	for k := 1; k < len(seen); k++ {
		cur := seen[k]
		assert.LessOrEqual(t, cur.cas, 2, "day %d", cur.day)
		if seen[k-1].cas == 1 && cur.cas == 2 {
			overlaps++
		}
		if k >= 2 && seen[k-2].issuer != cur.issuer {
			switches++
			if cur.cas == 2 {
				switchesDuringOverlap++
			}
		}
	}
	assert.Equal(t, 3, overlaps, "CA rollovers on days 244, 488 and 732")
	assert.Len(t, issuers, 4, "four CAs signed serving certificates")
	assert.Equal(t, 6, switches, "each replica moved to each new CA once")
	assert.Equal(t, switches, switchesDuringOverlap, "replicas moved to a new CA only while the bundle held both")
}

func TestStartRunsAPassAtOnceAndEveryInterval(t *testing.T) {
	fc := clocktesting.NewFakeClock(t0)
	c := newFakeClient(mutatingConfig(), validatingConfig())
	dir := t.TempDir()
	r := newTestRotator(t, c, fc, dir)
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()

	require.Eventually(t, fc.HasWaiters, 10*time.Second, 10*time.Millisecond, "first pass done, waiting for the interval")
	first := servedCert(t, dir)
	assert.Equal(t, t0, IssuedAt(first))

	fc.Step(60 * day)
	require.Eventually(t, func() bool {
		certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
		return err == nil && string(certPEM) != string(EncodeCerts(first))
	}, 10*time.Second, 10*time.Millisecond, "a pass after the interval renews the serving certificate")
	assert.Equal(t, t0.Add(60*day), IssuedAt(servedCert(t, dir)))

	stops(t, cancel, done)
}

func TestNewRefusesOptionsThatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"namespace is required", func(o *Options) { o.Namespace = "" }, "certs: options: namespace is empty"},
		{"secret name is required", func(o *Options) { o.SecretName = "" }, "certs: options: secret name is empty"},
		{"cert dir is required", func(o *Options) { o.CertDir = "" }, "certs: options: cert dir is empty"},
		{"renewal window must hold passes", func(o *Options) { o.ServingLifetime = time.Hour; o.Interval = 11 * time.Minute }, "shorter than 6 intervals"},
		{"serving certificate may not outlive its CA", func(o *Options) { o.CALifetime = 30 * day }, "CA lifetime 720h0m0s is shorter than the serving lifetime 2160h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Namespace: testNamespace, SecretName: testSecretName, ServiceName: "fledge-webhook", CertDir: t.TempDir()}
			tc.edit(&opts)
			_, err := New(newFakeClient(), opts)
			assert.ErrorContains(t, err, tc.want)
		})
	}

	r, err := New(newFakeClient(), Options{Namespace: testNamespace, SecretName: testSecretName, ServiceName: "fledge-webhook", CertDir: t.TempDir(), DNSNames: []string{"fledge-webhook", "localhost"}})
	require.NoError(t, err)
	assert.Equal(t, DefaultCALifetime, r.opts.CALifetime)
	assert.Equal(t, DefaultServingLifetime, r.opts.ServingLifetime)
	assert.Equal(t, DefaultInterval, r.opts.Interval)
	assert.Equal(t, append(ServiceDNSNames("fledge-webhook", testNamespace), "localhost"), r.dnsNames)
}

// stops cancels a Start and requires it to return nil soon.
func stops(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after its context was cancelled")
	}
}
