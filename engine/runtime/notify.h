/* notify.h: telling the service manager how the engine is doing, with
 * sd_notify(3) of libsystemd, for a unit of Type=notify (the pickline@
 * unit): READY=1 once the engine is open and listening, STOPPING=1 when it
 * drains, RELOADING=1 before a reload (then READY=1 again), a STATUS= line
 * for `systemctl status`, and WATCHDOG=1 pings sent from the loop while the
 * unit sets WatchdogSec=, so that an engine whose loop stops turning is
 * restarted. Outside such a unit ($NOTIFY_SOCKET unset) every call does
 * nothing. The one libsystemd dependency of pickline lives here. */
#ifndef PL_NOTIFY_H
#define PL_NOTIFY_H

#include <ev.h>

/* Notify: the watchdog of one loop; embed it, zeroed. Fields private. */
typedef struct Notify {
    ev_timer timer;
    struct ev_loop *loop;
    int on;
} Notify;

/* notify_ready sends READY=1 with STATUS=status (NULL: none). */
void notify_ready(const char *status);

/* notify_stopping sends STOPPING=1 with STATUS=status (NULL: none). */
void notify_stopping(const char *status);

/* notify_reloading sends RELOADING=1 with STATUS=status (NULL: none); send
 * notify_ready when the reload is done. */
void notify_reloading(const char *status);

/* notify_watchdog_start starts, when the service manager asks for watchdog
 * pings (sd_watchdog_enabled: $WATCHDOG_USEC, for this process), a timer
 * on loop that sends WATCHDOG=1 every half of the interval asked, and
 * returns the interval in seconds; 0 when none is asked (nothing started).
 * notify_watchdog_stop stops it; a no-op when it is not running. */
double notify_watchdog_start(Notify *n, struct ev_loop *loop);
void notify_watchdog_stop(Notify *n);

#endif
