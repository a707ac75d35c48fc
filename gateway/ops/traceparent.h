/*
 * traceparent.h - W3C Trace Context (https://www.w3.org/TR/trace-context/):
 * check a client's `traceparent`, or make one. Pure: randomness is an argument.
 *
 *   traceparent: 00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>
 *
 * The gateway takes part in a trace without recording spans: a valid header is
 * passed upstream unchanged, an absent or invalid one is replaced by a new one
 * (flags 00: not sampled, since the gateway recorded nothing), and the trace-id
 * goes in the access log next to the request id.
 */
#ifndef GW_TRACEPARENT_H
#define GW_TRACEPARENT_H

#include <stddef.h>
#include <stdint.h>

#define GW_TRACEPARENT_LEN 55

/*
 * 1 if v (len bytes, not NUL-terminated) is a traceparent the gateway passes on:
 * exactly 55 bytes, version 00, lower-case hex, trace-id and parent-id not all
 * zeros. Anything else (another version, upper case, extra fields) is 0: a new
 * one is made, as the specification allows a participant that cannot parse it.
 */
int gw_traceparent_valid(const char *v, size_t len);

/* Write a new traceparent and its NUL into out (56 bytes) from 24 random bytes
 * (16 of trace-id, 8 of parent-id; an all-zero id gets one bit set). */
void gw_traceparent_new(char out[GW_TRACEPARENT_LEN + 1], const unsigned char rnd[24]);

#endif
