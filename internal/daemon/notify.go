package daemon

import (
	"fmt"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// Every notification goes to $NOTIFY_SOCKET and does nothing (returns nil)
// when it is unset, that is when not started by systemd with Type=notify.
// The variable is left in place: the daemon notifies many times.

// Ready tells systemd that start-up is done (READY=1): send it once
// streaming has begun.
func Ready() error { return notify(sd.SdNotifyReady) }

// Stopping tells systemd that a graceful stop has begun (STOPPING=1).
func Stopping() error { return notify(sd.SdNotifyStopping) }

// Watchdog pings the service watchdog (WATCHDOG=1). Call it from the loop
// that must keep moving, so a wedged loop gets the service restarted.
func Watchdog() error { return notify(sd.SdNotifyWatchdog) }

// Status sets the one-line status `systemctl status` shows (STATUS=...).
// Line breaks are replaced by spaces.
func Status(text string) error {
	return notify("STATUS=" + strings.NewReplacer("\r", " ", "\n", " ").Replace(text))
}

func notify(state string) error {
	if _, err := sd.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %s: %w", strings.SplitN(state, "=", 2)[0], err)
	}
	return nil
}

// WatchdogInterval is how often to call Watchdog: half of the unit's
// WatchdogSec (systemd's advice), or 0 when the watchdog is off for this
// process.
func WatchdogInterval() time.Duration {
	d, err := sd.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// Pinger rate-limits watchdog pings so a busy loop may call Ping on every
// iteration: it sends WATCHDOG=1 at most once per quarter of the watchdog
// timeout. A nil *Pinger, or one made with the watchdog off, does nothing.
type Pinger struct {
	mu       sync.Mutex
	last     time.Time
	interval time.Duration
}

// NewPinger reads the watchdog setting of this process.
func NewPinger() *Pinger {
	return &Pinger{interval: WatchdogInterval() / 2}
}

// Enabled reports whether the watchdog is on.
func (p *Pinger) Enabled() bool { return p != nil && p.interval > 0 }

// Ping sends WATCHDOG=1 unless one was sent less than an interval ago.
func (p *Pinger) Ping() error {
	if !p.Enabled() {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	due := now.Sub(p.last) >= p.interval
	if due {
		p.last = now
	}
	p.mu.Unlock()
	if !due {
		return nil
	}
	return Watchdog()
}
