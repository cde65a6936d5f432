// Command check reads Kubernetes manifests (the output of `helm template`, documents
// separated by `---`) on standard input and decodes every object strictly into its
// typed struct from k8s.io/api, chosen by apiVersion and kind: an unknown kind, an
// unknown or misspelled field, a duplicate field or a value of the wrong type fails.
// It then checks what the Shop chart promises of its workloads (probes, resources,
// a non-root security context, Services that select pods).
//
//	helm template shop deploy/helm/shop --set ... | go run ./deploy/check
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The types the chart may render, by "apiVersion/kind".
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}, true
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}, true
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}, true
	}
	return nil, false
}

var separator = regexp.MustCompile(`(?m)^---\s*$`)

func main() {
	input, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fail("reading standard input: %v", err)
	}
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var objects []any
	counts := map[string]int{}
	for i, doc := range separator.Split(string(input), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			report("document %d: not YAML: %v", i, err)
			continue
		}
		obj, ok := newObject(head.APIVersion, head.Kind)
		if !ok {
			report("document %d: unexpected apiVersion/kind %q/%q (source: %s)", i, head.APIVersion, head.Kind, source(doc))
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			report("%s %s: %v", head.Kind, source(doc), err)
			continue
		}
		counts[head.Kind]++
		objects = append(objects, obj)
	}
	semantic(objects, report)
	if len(objects) == 0 {
		report("no objects on standard input")
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "check:", p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	var summary []string
	for kind, n := range counts {
		summary = append(summary, fmt.Sprintf("%d %s", n, kind))
	}
	fmt.Printf("ok: %d objects decoded strictly (%s)\n", len(objects), strings.Join(sorted(summary), ", "))
}

// Checks of what the chart promises beyond the schema.
func semantic(objects []any, report func(string, ...any)) {
	var pods []map[string]string
	deployments := map[string]bool{}
	for _, o := range objects {
		switch o := o.(type) {
		case *appsv1.Deployment:
			deployments[o.Name] = true
			pods = append(pods, o.Spec.Template.Labels)
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(o.Spec.Template.Labels)) {
				report("Deployment %s: its selector does not match its pod template", o.Name)
			}
			if o.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || o.Spec.Strategy.RollingUpdate == nil ||
				o.Spec.Strategy.RollingUpdate.MaxSurge == nil || o.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
				report("Deployment %s: RollingUpdate with maxSurge and maxUnavailable expected", o.Name)
			}
			checkPod("Deployment "+o.Name, &o.Spec.Template.Spec, true, report)
		case *batchv1.Job:
			checkPod("Job "+o.Name, &o.Spec.Template.Spec, false, report)
		}
	}
	for _, o := range objects {
		switch o := o.(type) {
		case *corev1.Service:
			if len(o.Spec.Selector) == 0 {
				report("Service %s: no selector", o.Name)
				continue
			}
			matched := false
			for _, p := range pods {
				if labels.SelectorFromSet(o.Spec.Selector).Matches(labels.Set(p)) {
					matched = true
				}
			}
			if !matched {
				report("Service %s: its selector %v matches no pod template", o.Name, o.Spec.Selector)
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			matched := false
			for _, p := range pods {
				if err == nil && sel.Matches(labels.Set(p)) {
					matched = true
				}
			}
			if !matched {
				report("PodDisruptionBudget %s: selects no pod template", o.Name)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if o.Spec.ScaleTargetRef.Kind != "Deployment" || !deployments[o.Spec.ScaleTargetRef.Name] {
				report("HorizontalPodAutoscaler %s: target %s/%s is not a rendered Deployment", o.Name, o.Spec.ScaleTargetRef.Kind, o.Spec.ScaleTargetRef.Name)
			}
		}
	}
}

func checkPod(what string, spec *corev1.PodSpec, serving bool, report func(string, ...any)) {
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		report("%s: pod securityContext.runAsNonRoot must be true", what)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		report("%s: seccompProfile RuntimeDefault expected", what)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			report("%s/%s: readOnlyRootFilesystem, no privilege escalation and capabilities drop [ALL] expected", what, c.Name)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			report("%s/%s: memory requests and limits and a cpu request expected", what, c.Name)
		}
		if !serving {
			continue
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/ready" {
			report("%s/%s: readiness probe on /ready expected", what, c.Name)
		}
		if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/health" {
			report("%s/%s: liveness probe on /health expected", what, c.Name)
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
			report("%s/%s: a preStop hook expected", what, c.Name)
		}
	}
	if serving && (spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds < 10) {
		report("%s: terminationGracePeriodSeconds of at least 10 expected", what)
	}
}

func source(doc string) string {
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "# Source: ") {
			return strings.TrimPrefix(line, "# Source: ")
		}
	}
	return "(unknown source)"
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func sorted(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "check: "+format+"\n", args...)
	os.Exit(2)
}
