/* notify.c: sd_notify for the engine (notify.h). sd_notify(3) sends one
 * datagram to $NOTIFY_SOCKET per call and returns 0 when the variable is
 * unset, so a pickline started by hand pays nothing. A failed send is
 * logged once: the engine runs on (systemd will say what it missed). */
#include "notify.h"

#include "pl.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

static void tell(const char *what, const char *status)
{
    static int warned;
    int rc = status ? sd_notifyf(0, "%s\nSTATUS=%s", what, status) : sd_notify(0, what);
    if (rc < 0 && !warned) {
        warned = 1;
        pl_log(PL_LOG_WARN, "engine: cannot tell the service manager %s ($NOTIFY_SOCKET): %s",
               what, strerror(-rc));
    }
}

void notify_ready(const char *status)
{
    tell("READY=1", status);
}

void notify_stopping(const char *status)
{
    tell("STOPPING=1", status);
}

void notify_reloading(const char *status)
{
    tell("RELOADING=1", status);
}

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    tell("WATCHDOG=1", NULL);
}

double notify_watchdog_start(Notify *n, struct ev_loop *loop)
{
    uint64_t usec = 0;
    if (n->on || sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    double every = (double)usec / 2e6;
    n->loop = loop;
    n->on = 1;
    ev_timer_init(&n->timer, on_watchdog, 0, every); /* a first ping at once */
    ev_timer_start(loop, &n->timer);
    return (double)usec / 1e6;
}

void notify_watchdog_stop(Notify *n)
{
    if (!n->on)
        return;
    ev_timer_stop(n->loop, &n->timer);
    n->on = 0;
}
