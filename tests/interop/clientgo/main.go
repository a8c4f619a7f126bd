// A client-go leader-election candidate for leaderd's interoperability
// tests: client-go's own tools/leaderelection on a LeaseLock with
// ReleaseOnCancel, as a controller would run it.
//
// It records its leadership intervals on CLOCK_MONOTONIC, one line each
// (`leading <ns>` when OnStartedLeading runs, `stopped <ns>` when the
// guarded work has stopped), so that a test can lay them next to leaderd's
// on one clock. The work stops before the context is cancelled, because
// ReleaseOnCancel gives the Lease away as soon as it is.
//
// Exit codes: 0 after SIGTERM/SIGINT (the Lease released if held), 3 when
// leadership was lost (renewal failed), 2 for bad flags or configuration.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	namespace := flag.String("namespace", "default", "namespace of the Lease")
	lease := flag.String("lease", "", "name of the Lease")
	identity := flag.String("identity", "", "holder identity")
	leaseDuration := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
	renewDeadline := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
	retryPeriod := flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
	intervals := flag.String("intervals", "", "file to append `leading|stopped <CLOCK_MONOTONIC ns>` lines to")
	coordinated := flag.Bool("coordinated", false, "Coordinated Leader Election: publish a LeaseCandidate and never grab the Lease")
	binaryVersion := flag.String("binary-version", "1.37.0", "LeaseCandidate binaryVersion (with -coordinated)")
	emulationVersion := flag.String("emulation-version", "1.37.0", "LeaseCandidate emulationVersion (with -coordinated)")
	klog.InitFlags(nil)
	flag.Parse()
	if *lease == "" || *identity == "" || *intervals == "" {
		fmt.Fprintln(os.Stderr, "-lease, -identity and -intervals are required")
		os.Exit(2)
	}

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		os.Exit(2)
	}
	config.UserAgent = "clientgo-candidate/" + *identity
	client := kubernetes.NewForConfigOrDie(config)

	out, err := os.OpenFile(*intervals, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "intervals:", err)
		os.Exit(2)
	}
	iv := &recorder{file: out}

	// Events as controllers record them: "<identity> became leader" on the Lease.
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events(*namespace)})
	defer broadcaster.Shutdown()
	events := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "clientgo-candidate"})

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: *namespace, Name: *lease},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *identity, EventRecorder: events},
	}

	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	var stopping sync.Once
	terminated := false
	go func() {
		<-signals
		stopping.Do(func() {
			terminated = true
			// Stop the guarded work first: cancel releases the Lease.
			iv.stop()
			cancel()
		})
	}()

	if *coordinated {
		candidate, waiter, err := leaderelection.NewCandidate(client, *namespace, *identity, *lease,
			*binaryVersion, *emulationVersion, coordinationv1.OldestEmulationVersion)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lease candidate:", err)
			os.Exit(2)
		}
		go candidate.Run(ctx)
		waiter.WaitForCacheSync(ctx.Done())
	}

	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: true,
		Coordinated:     *coordinated,
		Name:            *lease,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { iv.start() },
			OnStoppedLeading: func() { iv.stop() },
			OnNewLeader: func(holder string) {
				klog.InfoS("new leader observed", "holder", holder)
			},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "leader election config:", err)
		os.Exit(2)
	}
	elector.Run(ctx)
	if terminated {
		klog.InfoS("stopped on signal")
		os.Exit(0)
	}
	klog.InfoS("leadership lost")
	os.Exit(3)
}

// recorder appends the leadership intervals to a file, each line with one
// write(2), on CLOCK_MONOTONIC (the clock leaderd measures its terms with).
type recorder struct {
	mu      sync.Mutex
	file    *os.File
	leading bool
}

func monotonicNanos() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

func (r *recorder) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leading = true
	fmt.Fprintf(r.file, "leading %d\n", monotonicNanos())
}

// stop records the end of a term once; a no-op when not leading (client-go
// calls OnStoppedLeading even for a candidate that never led).
func (r *recorder) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leading {
		return
	}
	r.leading = false
	fmt.Fprintf(r.file, "stopped %d\n", monotonicNanos())
}
