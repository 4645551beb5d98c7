// Package certs owns the TLS material of fledge's admission webhook: a
// private CA, the serving certificate it signs, the Secret that stores both,
// the caBundle of fledge's MutatingWebhookConfiguration and
// ValidatingWebhookConfiguration, and the tls.crt/tls.key pair in the cert
// dir that controller-runtime's webhook server reads.
//
// # Why a Secret
//
// Every replica of the manager serves webhook calls, and the apiserver
// verifies all of them against one caBundle. The pair therefore lives in one
// Secret (type kubernetes.io/tls, in fledge's namespace) instead of being
// generated per pod:
//
//	tls.crt        serving certificate (PEM)
//	tls.key        serving key (PKCS#8 PEM)
//	ca.crt         the CA bundle: every CA the apiserver must trust now
//	ca-signer.crt  the current CA, which signs new serving certificates
//	ca.key         the current CA's key
//
// Replicas race on that Secret with optimistic concurrency: a create that
// finds the Secret already there (AlreadyExists) or an update that finds it
// changed (Conflict) re-reads it and plans again from what the other replica
// wrote. A valid pair is never regenerated, so replicas converge on one pair.
// The Rotator is not leader-elected: every replica must write its own cert
// dir, and the Secret writes are safe without a leader.
//
// # Lifetimes and renewal
//
// The CA lives 1 year and the serving certificate 90 days by default
// (Options.CALifetime, Options.ServingLifetime). A certificate is renewed once
// two thirds of its lifetime have passed (day 60 of 90, day 243 of 365),
// which leaves a third of the lifetime for passes that fail or wait. Keys are
// ECDSA P-256. NotBefore is set 5 minutes in the past so that an apiserver
// whose clock lags a little accepts a certificate served at once; the
// lifetime and the renewal point are counted from the moment of issue. A
// serving certificate never outlives the CA that signed it.
//
// # One pass
//
// A pass observes (reads the Secret and the webhook configurations), plans
// (a pure function of what was read and the injected clock), then applies in
// this order: store the Secret, inject the bundle into the webhook
// configurations, write the cert dir. Because the bundle is published before
// the cert dir changes, a new serving certificate is only ever served after
// the bundle that trusts it. Passes run at start and every Interval (10
// minutes); after a failed pass, or while a named webhook configuration does
// not exist yet (not an error: it is logged), the next pass comes after 30
// seconds, because a configuration created without its caBundle refuses
// every call under failurePolicy Fail.
//
// # CA rollover
//
// The served certificate must verify against the bundle the apiserver holds
// at every moment, across replicas. A CA rollover therefore takes two steps:
//
//  1. The CA is due: a new CA is issued and appended to the bundle; the
//     serving certificate (signed by the old CA) is kept. The pass stores the
//     Secret and injects the bundle {old, new}.
//  2. A later pass sees the new CA in the caBundle of every webhook entry,
//     and at least one Interval has passed since the new CA was issued: only
//     then it re-signs the serving certificate with the new CA. Replicas pick
//     it up on their next pass; the apiserver trusts both CAs meanwhile.
//  3. The old CA stays in the bundle until it expires, then is pruned. By
//     then no serving certificate it signed is valid anyway.
//
// The Interval of waiting in step 2 covers a replica whose pass read the
// Secret just before step 1 and injects its stale bundle late: a pass is cut
// off after half an Interval, so such a write lands before the re-sign, and
// the re-sign waits until a pass observes the new CA published again. It also
// lets every apiserver instance see the updated configuration. The guarantee
// assumes replica clocks agree to within half an Interval.
//
// If a stored serving certificate is unusable (missing, expired, key does not
// match, not trusted by the bundle), waiting protects nothing and it is
// re-issued at once. If the CA in the Secret is lost or broken, the rollover
// above runs as if the CA were due.
//
// # Wiring
//
// The webhook server reads the cert dir when it starts, and the manager
// starts webhook servers before other runnables. So main calls Rotate once
// before mgr.Start, then adds the Rotator to the manager so it keeps the
// pair fresh. Give it a client that reads from the API server (client.New,
// not the manager's cache): the cache would watch every Secret in the
// cluster, which costs memory and a cluster-wide RBAC grant, and can be stale.
// Pass RequireTLS12 in webhook.Options.TLSOpts, and Rotator.Ready as a
// readiness check.
package certs
