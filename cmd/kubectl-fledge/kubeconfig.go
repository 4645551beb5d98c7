package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeconfig holds kubectl's connection flags (--kubeconfig, --context,
// -n/--namespace, --cluster, --user, -s/--server, --token, --as, ...) and
// resolves them the way kubectl does: flags over the KUBECONFIG files over
// in-cluster config.
//
// It binds clientcmd's own override flags, which is what cli-runtime's
// genericclioptions.ConfigFlags wraps; ConfigFlags would also pull in the
// resource builder and kustomize, which this plugin does not use.
type kubeconfig struct {
	loading   *clientcmd.ClientConfigLoadingRules
	overrides *clientcmd.ConfigOverrides
	// warnings receives the apiserver's warnings (fledge's webhook says
	// why an undo or a command did what it did) as kubectl prints them.
	warnings io.Writer
}

func newKubeconfig() *kubeconfig {
	return &kubeconfig{
		loading:   clientcmd.NewDefaultClientConfigLoadingRules(),
		overrides: &clientcmd.ConfigOverrides{},
	}
}

// bind adds the connection flags to fs, named as kubectl names them.
func (k *kubeconfig) bind(fs *pflag.FlagSet) {
	fs.StringVar(&k.loading.ExplicitPath, clientcmd.RecommendedConfigPathFlag, "", "Path to the kubeconfig file to use for CLI requests.")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	names.ClusterOverrideFlags.APIServer.ShortName = "s"
	// kubectl offers neither basic authentication nor these two.
	names.AuthOverrideFlags.Username.LongName = ""
	names.AuthOverrideFlags.Password.LongName = ""
	names.ClusterOverrideFlags.ProxyURL.LongName = ""
	names.ClusterOverrideFlags.DisableCompression.LongName = ""
	clientcmd.BindOverrideFlags(k.overrides, fs, names)
}

func (k *kubeconfig) config() clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(k.loading, k.overrides)
}

// Client builds a clientset from the kubeconfig and the flags.
func (k *kubeconfig) Client() (kubernetes.Interface, error) {
	rc, err := k.config().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no usable kubeconfig: %w (set KUBECONFIG or pass --kubeconfig)", err)
	}
	rc.UserAgent = "kubectl-fledge"
	if k.warnings != nil {
		rc.WarningHandler = rest.NewWarningWriter(k.warnings, rest.WarningWriterOptions{Deduplicate: true})
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", rc.Host, err)
	}
	return cs, nil
}

// Namespace is -n, else the context's namespace, else "default".
func (k *kubeconfig) Namespace() (string, error) {
	ns, _, err := k.config().Namespace()
	if err != nil {
		return "", fmt.Errorf("no namespace from the kubeconfig: %w (pass -n NAMESPACE)", err)
	}
	return ns, nil
}
