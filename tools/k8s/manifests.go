// Package k8s checks the Kubernetes manifests in deploy/kubernetes without a
// cluster: every document is decoded strictly into the Kubernetes API types
// (an unknown or misspelt field, a wrong type or a duplicate key fails), and
// the tests then check what the daemon depends on. It is its own module so
// that k8s.io stays out of the product's go.mod; make test runs it.
package k8s

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Dir is deploy/kubernetes, relative to this package.
var Dir = filepath.Join("..", "..", "deploy", "kubernetes")

// Object is one decoded document of a manifest file.
type Object struct {
	File string
	Kind string
	Name string
	// Obj is a pointer to the typed object (*appsv1.Deployment, ...).
	Obj any
}

// kinds maps apiVersion/kind to a constructor of its API type.
var kinds = map[string]func() any{
	"apps/v1/Deployment": func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":       func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":   func() any { return &batchv1.CronJob{} },
	"v1/Service":         func() any { return &corev1.Service{} },
	"v1/ConfigMap":       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":          func() any { return &corev1.Secret{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// Load decodes every document of every *.yaml file in dir strictly.
func Load(dir string) ([]Object, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no manifests in %s", dir)
	}
	sort.Strings(files)
	var out []Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range docSep.Split(string(data), -1) {
			if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
				continue
			}
			o, err := decode(filepath.Base(f), []byte(doc))
			if err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", filepath.Base(f), i+1, err)
			}
			out = append(out, o)
		}
	}
	return out, nil
}

func stripComments(doc []byte) []byte {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAll(doc, nil)
}

func decode(file string, doc []byte) (Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return Object{}, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return Object{}, fmt.Errorf("unknown apiVersion/kind %s/%s", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return Object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	meta, ok := obj.(metav1.Object)
	if !ok {
		return Object{}, fmt.Errorf("%s has no object metadata", tm.Kind)
	}
	if errs := validation.IsDNS1123Subdomain(meta.GetName()); len(errs) > 0 {
		return Object{}, fmt.Errorf("%s name %q: %v", tm.Kind, meta.GetName(), errs)
	}
	for k, v := range meta.GetLabels() {
		if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
			return Object{}, fmt.Errorf("%s label %s=%s: %v", tm.Kind, k, v, errs)
		}
	}
	return Object{File: file, Kind: tm.Kind, Name: meta.GetName(), Obj: obj}, nil
}

// Workload is a pod template and where it came from.
type Workload struct {
	Object
	Pod *corev1.PodTemplateSpec
}

// Workloads returns the pod templates of the Deployments, Jobs and CronJobs.
func Workloads(objs []Object) []Workload {
	var out []Workload
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			out = append(out, Workload{o, &v.Spec.Template})
		case *batchv1.Job:
			out = append(out, Workload{o, &v.Spec.Template})
		case *batchv1.CronJob:
			out = append(out, Workload{o, &v.Spec.JobTemplate.Spec.Template})
		}
	}
	return out
}

// Containers returns the init containers and containers of a pod.
func Containers(pod *corev1.PodTemplateSpec) []corev1.Container {
	return append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
}

// Find returns the objects of one kind.
func Find[T any](objs []Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}
