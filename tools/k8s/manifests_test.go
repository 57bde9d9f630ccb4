package k8s

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const repo = "../.."

func load(t *testing.T) []Object {
	t.Helper()
	objs, err := Load(Dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func one[T any](t *testing.T, objs []Object) T {
	t.Helper()
	found := Find[T](objs)
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T, found %d", zero, len(found))
	}
	return found[0]
}

// TestManifestsDecodeStrictly: every document decodes into its API type with
// no unknown field, and the set of objects is the one the README describes.
func TestManifestsDecodeStrictly(t *testing.T) {
	objs := load(t)
	var got []string
	for _, o := range objs {
		got = append(got, o.Kind+"/"+o.Name)
	}
	slices.Sort(got)
	want := []string{
		"ConfigMap/postgres-seren-replicator",
		"CronJob/postgres-seren-replicator-catchup",
		"Deployment/postgres-seren-replicator",
		"Job/postgres-seren-replicator-init",
		"Secret/postgres-seren-replicator",
		"Service/postgres-seren-replicator-metrics",
		"ServiceMonitor/postgres-seren-replicator",
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects = %v, want %v", got, want)
	}
	readme, err := os.ReadFile(filepath.Join(Dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if !strings.Contains(string(readme), o.File) {
			t.Errorf("deploy/kubernetes/README.md does not mention %s", o.File)
		}
	}
}

// TestStrictDecodingCatchesMistakes makes sure the decoding above can fail:
// a misspelt field and a wrong type are errors.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 1}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: one}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, port: 81}]}\n",
		"apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_A_Name}\n",
	} {
		if _, err := decode("test.yaml", []byte(doc)); err == nil {
			t.Errorf("decoded without error:\n%s", doc)
		}
	}
}

// TestDeploymentRunsOneDaemon: one replica replaced with Recreate (the slot
// takes one consumer), probes on the paths and port sync serves, and time
// for a clean stop.
func TestDeploymentRunsOneDaemon(t *testing.T) {
	d := one[*appsv1.Deployment](t, load(t))
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy = %q, want Recreate (a rolling update runs two consumers of one slot)", d.Spec.Strategy.Type)
	}
	pod := d.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "sync" || slices.Contains(c.Args, "--catch-up") {
		t.Errorf("args = %v, want the sync daemon", c.Args)
	}
	port := metricsPort(t, c)
	var metricsNamed bool
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsNamed = true
			if p.ContainerPort != port {
				t.Errorf("container port metrics = %d, --metrics-addr port = %d", p.ContainerPort, port)
			}
		}
	}
	if !metricsNamed {
		t.Error("no container port named metrics")
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}, {"startup", c.StartupProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", pr.name, pr.path)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s probe path = %s, want %s", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		if p := pr.probe.HTTPGet.Port; p != intstr.FromString("metrics") && p != intstr.FromInt32(port) {
			t.Errorf("%s probe port = %s, want metrics (%d)", pr.name, p.String(), port)
		}
	}
	if a := pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(port)) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod scrape annotations = %v", a)
	}
	stop := unitSetting(t, "postgres-seren-replicator.service", "TimeoutStopSec")
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= stop {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than the unit's TimeoutStopSec (%s) that a clean stop is given", g, stop)
	}
}

// metricsPort is the port of the container's --metrics-addr.
func metricsPort(t *testing.T, c corev1.Container) int32 {
	t.Helper()
	for _, a := range c.Args {
		if addr, ok := strings.CutPrefix(a, "--metrics-addr="); ok {
			_, p, _ := strings.Cut(addr, ":")
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("--metrics-addr=%s: no port", addr)
			}
			return int32(n)
		}
	}
	t.Fatalf("%s: no --metrics-addr=HOST:PORT in args %v", c.Name, c.Args)
	return 0
}

// unitSetting reads a duration setting (plain seconds or "60s") from a
// shipped systemd unit.
func unitSetting(t *testing.T, unit, key string) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "deploy", unit))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + key + `=(\d+)s?$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no %s=", unit, key)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return time.Duration(n) * time.Second
}

// TestWorkloadsRunRestricted: non-root, no privilege escalation, read-only
// root, no capabilities, no service account token, and a writable /tmp for
// init (pg_dump's schema files).
func TestWorkloadsRunRestricted(t *testing.T) {
	ws := Workloads(load(t))
	if len(ws) != 3 {
		t.Fatalf("want 3 workloads (Deployment, Job, CronJob), got %d", len(ws))
	}
	for _, w := range ws {
		ps := w.Pod.Spec.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
			t.Errorf("%s: pod must run as a non-root user", w.Name)
		}
		if ps != nil && (ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			t.Errorf("%s: want seccompProfile RuntimeDefault", w.Name)
		}
		if a := w.Pod.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s: automountServiceAccountToken should be false (the tool never calls the API)", w.Name)
		}
		if _, isDeployment := w.Obj.(*appsv1.Deployment); !isDeployment && w.Pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: restartPolicy = %q, want Never (a failed run is for a person to read)", w.Name, w.Pod.Spec.RestartPolicy)
		}
		for _, c := range Containers(w.Pod) {
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s/%s: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", w.Name, c.Name)
			}
			if len(c.Args) > 0 && c.Args[0] == "init" && !mountsEmptyDir(w.Pod, c, "/tmp") {
				t.Errorf("%s/%s: init writes pg_dump's output under /tmp: mount an emptyDir there", w.Name, c.Name)
			}
		}
	}
}

func mountsEmptyDir(pod *corev1.PodTemplateSpec, c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path || m.ReadOnly {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				return true
			}
		}
	}
	return false
}

// TestSecretsReachTheBinary: the connection strings come from the Secret,
// the passwords are files mounted from it (SEREN_*_PASSWORD_FILE), and no
// literal value holds a password.
func TestSecretsReachTheBinary(t *testing.T) {
	objs := load(t)
	secret := one[*corev1.Secret](t, objs)
	cm := one[*corev1.ConfigMap](t, objs)
	for _, w := range Workloads(objs) {
		for _, c := range Containers(w.Pod) {
			where := w.Name + "/" + c.Name
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
				if e.Value != "" && regexp.MustCompile(`(?i)password=|://[^/@]*:[^/@]*@`).MatchString(e.Value) {
					t.Errorf("%s: %s holds a password in the manifest", where, e.Name)
				}
			}
			for _, name := range []string{"SEREN_SOURCE", "SEREN_TARGET"} {
				ref := env[name].ValueFrom
				if ref == nil || ref.SecretKeyRef == nil {
					t.Errorf("%s: %s must come from the Secret (secretKeyRef)", where, name)
					continue
				}
				if ref.SecretKeyRef.Name != secret.Name {
					t.Errorf("%s: %s names Secret %s, the example is %s", where, name, ref.SecretKeyRef.Name, secret.Name)
				}
				if _, ok := secret.StringData[ref.SecretKeyRef.Key]; !ok {
					t.Errorf("%s: %s reads key %s, which the example Secret lacks", where, name, ref.SecretKeyRef.Key)
				}
			}
			for _, name := range []string{"SEREN_SOURCE_PASSWORD_FILE", "SEREN_TARGET_PASSWORD_FILE"} {
				path := env[name].Value
				if path == "" {
					t.Errorf("%s: %s not set", where, name)
					continue
				}
				if key := secretFileKey(w.Pod, c, path); key == "" {
					t.Errorf("%s: %s=%s is not a file of a mounted Secret volume", where, name, path)
				} else if _, ok := secret.StringData[key]; !ok {
					t.Errorf("%s: %s reads Secret key %s, which the example Secret lacks", where, name, key)
				}
			}
			for _, from := range c.EnvFrom {
				if from.ConfigMapRef == nil || from.ConfigMapRef.Name != cm.Name {
					t.Errorf("%s: envFrom %+v is not the ConfigMap %s", where, from, cm.Name)
				}
			}
		}
	}
}

// secretFileKey returns the Secret key behind path in container c, or "".
func secretFileKey(pod *corev1.PodTemplateSpec, c corev1.Container, path string) string {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					return it.Key
				}
			}
		}
	}
	return ""
}

// TestInitJobAndCatchUpCronJob: init validates first, runs unattended with
// the pg_dump image of the Dockerfile's default major; catch-up runs never
// overlap.
func TestInitJobAndCatchUpCronJob(t *testing.T) {
	objs := load(t)
	job := one[*batchv1.Job](t, objs)
	spec := job.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || !slices.Equal(spec.InitContainers[0].Args, []string{"validate"}) {
		t.Errorf("init Job: want a validate init container, got %+v", spec.InitContainers)
	}
	if len(spec.Containers) != 1 || len(spec.Containers[0].Args) < 2 || spec.Containers[0].Args[0] != "init" || !slices.Contains(spec.Containers[0].Args, "--yes") {
		t.Errorf("init Job: want one container running init --yes, got %+v", spec.Containers)
	}
	major := dockerfileArg(t, "PG_MAJOR")
	for _, c := range Containers(&job.Spec.Template) {
		if !strings.HasSuffix(c.Image, "-pg"+major) {
			t.Errorf("init Job %s: image %s, want the -pg%s variant (pg_dump and pg_restore)", c.Name, c.Image, major)
		}
	}
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit != 0 {
		t.Errorf("init Job: backoffLimit = %v, want 0", job.Spec.BackoffLimit)
	}

	cj := one[*batchv1.CronJob](t, objs)
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("catch-up CronJob: concurrencyPolicy = %q, want Forbid (two runs compete for the slot)", cj.Spec.ConcurrencyPolicy)
	}
	if f := strings.Fields(cj.Spec.Schedule); len(f) != 5 {
		t.Errorf("catch-up CronJob: schedule %q is not five cron fields", cj.Spec.Schedule)
	}
	cs := cj.Spec.JobTemplate.Spec.Template.Spec.Containers
	if len(cs) != 1 || !slices.Equal(cs[0].Args, []string{"sync", "--catch-up"}) {
		t.Errorf("catch-up CronJob: want one container running sync --catch-up, got %+v", cs)
	}
	if cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds == nil {
		t.Error("catch-up CronJob: no activeDeadlineSeconds bounding a run")
	}
}

// dockerfileArg reads an ARG's default from the Dockerfile.
func dockerfileArg(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ARG ` + name + `=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("Dockerfile has no ARG %s=", name)
	}
	return string(m[1])
}

// TestImagesAreOneRelease: every workload uses one image repository and one
// version; the pg variant is VERSION-pgN, as make image tags it.
func TestImagesAreOneRelease(t *testing.T) {
	imageRe := regexp.MustCompile(`^([a-z0-9.\-/]+):(\d+\.\d+\.\d+)(-pg\d+)?$`)
	repos, versions := map[string]bool{}, map[string]bool{}
	for _, w := range Workloads(load(t)) {
		for _, c := range Containers(w.Pod) {
			m := imageRe.FindStringSubmatch(c.Image)
			if m == nil {
				t.Errorf("%s/%s: image %q is not REPO:X.Y.Z[-pgN]", w.Name, c.Name, c.Image)
				continue
			}
			repos[m[1]], versions[m[2]] = true, true
			if c.ImagePullPolicy == corev1.PullAlways {
				t.Errorf("%s/%s: a pinned tag needs no imagePullPolicy Always", w.Name, c.Name)
			}
		}
	}
	if len(repos) != 1 || len(versions) != 1 {
		t.Errorf("images use repositories %v and versions %v, want one of each", repos, versions)
	}
}

// TestScrapeConfiguration: the Service selects the daemon's pods and
// exposes its metrics port; the ServiceMonitor selects the Service and
// names that port; scrape annotations agree.
func TestScrapeConfiguration(t *testing.T) {
	objs := load(t)
	d := one[*appsv1.Deployment](t, objs)
	svc := one[*corev1.Service](t, objs)
	sm := one[*monitoringv1.ServiceMonitor](t, objs)
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the Deployment's pods", k, v)
		}
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Error("Service: publishNotReadyAddresses false: a lagging daemon (not ready) would not be scraped")
	}
	port := metricsPort(t, d.Spec.Template.Spec.Containers[0])
	var svcPort *corev1.ServicePort
	for i, p := range svc.Spec.Ports {
		if p.Name == "metrics" {
			svcPort = &svc.Spec.Ports[i]
		}
	}
	if svcPort == nil {
		t.Fatal("Service has no port named metrics")
	}
	if svcPort.TargetPort != intstr.FromString("metrics") && svcPort.TargetPort != intstr.FromInt32(port) {
		t.Errorf("Service targetPort = %s, want metrics", svcPort.TargetPort.String())
	}
	if a := svc.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(svcPort.Port)) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("Service scrape annotations = %v", a)
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selector %s=%s does not match the Service's labels", k, v)
		}
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svcPort.Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints = %+v, want port %s path /metrics", sm.Spec.Endpoints, svcPort.Name)
	}
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// help returns `postgres-seren-replicator CMD --help` from a binary built
// from this checkout.
func help(t *testing.T, cmd string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "seren-k8s-")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "postgres-seren-replicator")
		// As make build builds it (and so from the same build cache).
		b := exec.Command("go", "build", "-trimpath", "-o", built, "./cmd/postgres-seren-replicator")
		b.Dir, b.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := b.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	out, err := exec.Command(built, cmd, "--help").Output()
	if err != nil {
		t.Fatalf("%s --help: %v", cmd, err)
	}
	return string(out)
}

// libpqVariables may be set beside the SEREN_ ones: libpq's own.
var libpqVariables = []string{"PGPASSFILE", "PGSSLROOTCERT", "PGSSLMODE", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGSSLCERT", "PGSSLKEY", "PG_DUMP"}

// TestFlagsAndVariablesExist: every flag in a container's args and every
// variable in its env is one the command it runs accepts (its --help lists
// it); every ConfigMap key is read by some command that loads the ConfigMap.
func TestFlagsAndVariablesExist(t *testing.T) {
	objs := load(t)
	cm := one[*corev1.ConfigMap](t, objs)
	cmUsed := map[string]bool{}
	for _, w := range Workloads(objs) {
		for _, c := range Containers(w.Pod) {
			where := w.Name + "/" + c.Name
			if len(c.Command) > 0 {
				t.Errorf("%s: command overrides the image's entrypoint", where)
			}
			if len(c.Args) == 0 {
				t.Errorf("%s: no command in args", where)
				continue
			}
			h := help(t, c.Args[0])
			for _, a := range c.Args[1:] {
				if !strings.HasPrefix(a, "--") {
					t.Errorf("%s: argument %q is not a flag", where, a)
					continue
				}
				name, _, _ := strings.Cut(a, "=")
				if !regexp.MustCompile(`(^|\s)` + regexp.QuoteMeta(name) + `[=\s]`).MatchString(h) {
					t.Errorf("%s: %s %s: no such flag in %s --help", where, c.Args[0], name, c.Args[0])
				}
			}
			for _, e := range c.Env {
				if !accepts(h, e.Name) {
					t.Errorf("%s: %s does not read %s (not in %s --help)", where, c.Args[0], e.Name, c.Args[0])
				}
			}
			if len(c.EnvFrom) > 0 {
				for k := range cm.Data {
					if accepts(h, k) {
						cmUsed[k] = true
					}
				}
			}
		}
	}
	for k := range cm.Data {
		if !strings.HasPrefix(k, "SEREN_") && !slices.Contains(libpqVariables, k) {
			t.Errorf("ConfigMap key %s is not a SEREN_ or libpq variable", k)
		} else if strings.HasPrefix(k, "SEREN_") && !cmUsed[k] {
			t.Errorf("ConfigMap key %s is read by none of the commands that load it", k)
		}
	}
}

func accepts(help, name string) bool {
	if slices.Contains(libpqVariables, name) {
		return true
	}
	return strings.Contains(help, "$"+name+")")
}
