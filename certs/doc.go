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
//
// # State MAC keys
//
// The package also keeps the keys of the MAC (HMAC-SHA256) that fledge
// puts on the rollout state it writes into a Deployment annotation, so that
// the router acts only on a state fledge wrote (package rollout seals and
// checks; StateKeys satisfies its Keys interface). The keys live in one
// Opaque Secret in fledge's namespace, "fledge-state-key" by default
// (StateKeysOptions.SecretName), labelled app.kubernetes.io/component:
// state-key:
//
//	current               the ID of the signing key, which seals new states
//	key.20261202T013500Z  the key of that ID: 32 random bytes (crypto/rand),
//	                      one entry per accepted key
//
// An ID is the key's creation time in UTC to the second, so IDs sort by age
// and say when a key was made. Entries of the Secret that are not fledge's
// are kept. Replicas share the Secret as they share the webhook's, with
// optimistic concurrency: a replica that loses a race re-reads and plans
// again, and a good key is never replaced, so replicas converge on one key
// set. StateKeys is not leader-elected: every replica checks seals. Each
// replica answers SigningKey and Key from what its last pass read; before
// its first pass it has no key, cannot seal, and is not Ready.
//
// # State key rollover
//
// A replica accepts a seal only if its last pass read the key, so a key is
// published before it signs, like a CA in a CA rollover. With the defaults
// (Lifetime 30 days, Interval 10 minutes):
//
//  1. The signing key has signed for Lifetime (counted from its ID) and no
//     newer key exists: a pass makes a new key and stores it beside the old
//     one, which keeps signing.
//  2. The first pass at least two Intervals after the new key was made
//     makes it the signing key. A pass runs every Interval and is cut off
//     after half an Interval, so every replica whose passes succeed has read
//     the new key by then and accepts what it seals.
//  3. A key older than the signing key is dropped once the signing key has
//     signed for Lifetime, counted from the moment it took over (its ID
//     plus two Intervals). So a state sealed just before a rollover stays
//     accepted for 30 days after its key stopped signing.
//
// The Secret thus holds two keys, and three during the two Intervals before
// the oldest is dropped. If no key can sign (the Secret is missing, current
// is missing or names no key, or its key is not 32 bytes), a pass makes a
// key and signs with it at once: nothing can be sealed otherwise. A
// replica that has not read that key yet refuses what it seals until its
// next pass, which only matters when the signing key was lost, not at first
// start. An entry key.* whose name is not an ID or whose key is not 32 bytes
// is dropped and logged. Passes come every Interval; after a failed pass,
// the next comes after 30 seconds (or the Interval, if shorter). A pass never
// makes a key in the second another was made in, as IDs have second
// precision.
//
// # Emergency rotation
//
// For a key that leaked, delete the Secret: every replica creates a new key
// at its next pass (they converge on one) and signs with it at once, and the
// old keys are no longer accepted anywhere. States sealed with them are then
// not fledge's: the router drops them, and live rollouts start clean.
// Restarting the replicas makes that happen at once instead of within an
// Interval, during which a replica that has not passed yet still accepts the
// old key and refuses the new one.
//
// To retire the signing key early without dropping live states, annotate the
// Secret with fledge.dev/rotate (any non-empty value, e.g.
// kubectl annotate secret fledge-state-key fledge.dev/rotate=now): the next
// pass makes a new key whatever the age of the signing key, removes the
// annotation, and the rollover goes on from step 2, so the old key is
// accepted for one Lifetime more. If a newer key was already waiting, the
// new one supersedes it and the waiting one never signs.
//
// # Wiring the state keys
//
// main calls Load once before mgr.Start, as it calls Rotate, adds StateKeys
// to the manager, and passes Ready as a readiness check. Give it the same
// direct client as the Rotator; its ServiceAccount needs get and update on
// the Secret's name and create on Secrets in fledge's namespace.
package certs
