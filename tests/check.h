/*
 * check.h - the assertions of the C tests that run real I/O (tests/store,
 * tests/upstream): a failed check names the test (cur_test) and exits; loops are
 * run until a condition holds, within a deadline.
 */
#ifndef GW_TESTS_CHECK_H
#define GW_TESTS_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

static const char *cur_test = "?";

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "FAIL %s: %s:%d: %s\n", cur_test, __FILE__, __LINE__, #cond); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                        \
    do {                                                                                   \
        if (strstr((hay), (needle)) == NULL) {                                             \
            fprintf(stderr, "FAIL %s: %s:%d: \"%s\" does not contain \"%s\"\n", cur_test, \
                    __FILE__, __LINE__, (hay), (needle));                                  \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static inline uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run event loop base until cond holds; after ms milliseconds the test fails. */
#define RUN_BASE_UNTIL(base, cond, ms)                                                   \
    do {                                                                                 \
        uint64_t dl_ = now_ms() + (ms);                                                  \
        while (!(cond)) {                                                                \
            if (now_ms() > dl_) {                                                        \
                fprintf(stderr, "FAIL %s: %s:%d: timed out waiting for %s\n", cur_test, \
                        __FILE__, __LINE__, #cond);                                      \
                exit(1);                                                                 \
            }                                                                            \
            event_base_loop((base), EVLOOP_ONCE);                                        \
        }                                                                                \
    } while (0)

#endif
