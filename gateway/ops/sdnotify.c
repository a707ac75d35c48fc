/*
 * sdnotify.c - telling systemd (Type=notify) where the gateway is in its life:
 * READY once the listeners are bound, RELOADING/READY around a SIGHUP reload,
 * STOPPING when draining starts. sd_notify() is a no-op without NOTIFY_SOCKET,
 * so the gateway runs the same outside systemd.
 */
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "ops.h"

void gw_sd_ready(void)
{
    sd_notifyf(0, "READY=1\nSTATUS=serving\nMAINPID=%lu", (unsigned long)getpid());
}

void gw_sd_reloading(void)
{
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
}

void gw_sd_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
}
