/*
 * config_int.h - between the three files of the configuration: config.c (the
 * loader and its directive table), config_values.c (one value: its parser, its
 * setter, what it must look like) and config_check.c (the checks of the whole
 * configuration). Not for the rest of the gateway, which sees config.h only. Pure.
 */
#ifndef GW_CONFIG_INT_H
#define GW_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define CONF_QUOTE_MAX   80     /* bytes of a value echoed in an error message */
#define CONF_QUOTE_BUF   (CONF_QUOTE_MAX * 4 + 8)
#define CONF_LABEL_BUF   256
#define CONF_NAME_MAX    128    /* model and alias names */
#define CONF_SECONDS_MAX 3600   /* largest value in a seconds list */

#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* ------------------------------------------------------------------------------------------ */
/* The directive table (config.c)                                                             */

enum conf_type {
    CONF_FILE = 0,  /* char *: a readable file (path resolved) */
    CONF_DIR,       /* char *: a directory path (resolved; checked when used) */
    CONF_LOG,       /* char *: "-", "off" or a path (resolved) */
    CONF_BOOL,      /* int: 0 or 1 */
    CONF_INT,       /* int in min..max */
    CONF_SIZE,      /* size_t: bytes in min..max, k/m/g suffix */
    CONF_DURATION,  /* int: ms in min..max, ms/s/m/h suffix required */
    CONF_ENUM,      /* int: index of the value in names[] (any case) */
    CONF_LISTEN,    /* HOST:PORT into listen_host, listen_port (offset unused) */
    CONF_URL,       /* http(s)://HOST[:PORT][/BASE] into upstream_* (offset unused) */
    CONF_SECRET,    /* env:NAME | file:PATH appended to upstream_keys (offset unused) */
    CONF_SECONDS,   /* comma list of integers into gw_model.seconds (offset unused) */
    CONF_SIZES,     /* comma list of WxH into gw_model.sizes (offset unused) */
    CONF_SHA256,    /* 64 hex digits into 32 bytes */
    CONF_PATH,      /* char *: any path (resolved; created or checked when used) */
    CONF_LONG_DURATION, /* int64_t: ms in min..max, ms/s/m/h/d suffix required */
    CONF_DATE,      /* int64_t: YYYY-MM-DD as the UTC ms of its midnight */
    CONF_NAMES,     /* struct gw_names: comma list of names */
    CONF_REDIS,     /* HOST:PORT | unix:PATH into redis_host/port/unix (offset unused) */
    CONF_PASSWORD,  /* char *: env:NAME | file:PATH, resolved (never echoed) */
    CONF_PREFIX,    /* char *: 1..64 bytes of A-Za-z0-9 and :_.-{} */
};

enum conf_section {
    SEC_TOP = 0,  /* before any [section]: only include */
    SEC_SERVER,
    SEC_UPSTREAM,
    SEC_MODELS,
    SEC_ALIASES,  /* free-form FRIENDLY = MODELNAME */
    SEC_STORE,
    SEC_JOBS,
    SEC_ADMIN,
    SEC_LIMITS,
    SEC_MODEL,    /* [model NAME]: fields of a struct gw_model */
    SEC_KEY,      /* [key NAME]: fields of a struct gw_team_key */
    SEC_SKIP,     /* after a bad section header (reported): its keys are ignored */
};

#define CONF_REQUIRED 0x1 /* missing after the whole file: an error */
#define CONF_MULTI    0x2 /* may repeat; each value is added */

struct conf_directive {
    enum conf_section section;
    const char *name;
    enum conf_type type;
    size_t offset;            /* into gw_config, gw_model or gw_team_key, by section */
    const char *dflt;         /* parsed like a value from the file, first; NULL: none */
    long long min, max;       /* CONF_INT, CONF_SIZE (bytes), CONF_DURATION (ms) */
    const char *const *names; /* CONF_ENUM: accepted words, NULL-terminated; index = value */
    unsigned flags;
};

/* The table's length: a constant, for the seen masks and set_at[] below (config.c checks
 * that it is the table's). */
#define CONF_NDIRECTIVES 57

extern const struct conf_directive conf_directives[];

/* ------------------------------------------------------------------------------------------ */
/* Loading state                                                                              */

struct conf_loc {
    const char *file; /* borrowed from conf_loader.files (or CONF_DEFAULT) */
    int line;         /* 0: no line (a built-in default, or a whole-file check) */
};

/* What was set, and where, in one instance: the config, one model or one key. */
struct conf_inst {
    struct conf_loc at;                      /* its [section] header */
    uint64_t seen;                           /* bit i: conf_directives[i] was set */
    struct conf_loc set_at[CONF_NDIRECTIVES];
};

struct conf_alias {
    char *from;
    char *to;
    struct conf_loc at;
};

struct conf_loader {
    struct gw_config *cfg;
    FILE *errs;                  /* may be NULL */
    unsigned nerrors;
    int oom;                     /* "out of memory" was reported */
    char **files;                /* every file read: what conf_loc.file points into */
    unsigned nfiles, files_cap;
    struct conf_inst top;        /* [server], [upstream], [models] */
    struct conf_loc section_at[SEC_SKIP]; /* first header of each plain section */
    struct conf_inst *minst;     /* parallel to cfg->catalog.models */
    unsigned minst_cap, models_cap;
    struct conf_inst *kinst;     /* parallel to cfg->keys */
    unsigned kinst_cap, keys_cap;
    int no_secrets;              /* gw_config_load_refs: references checked, not resolved */
    struct conf_alias *aliases;  /* checked once every model is known */
    unsigned naliases, aliases_cap;
    unsigned upkeys_cap;
};

/* ------------------------------------------------------------------------------------------ */
/* config.c                                                                                   */

/* Allocation: counted, so that gw_config_test_fail_alloc() can make one fail. */
void *conf_malloc(size_t n);
void *conf_calloc(size_t n, size_t size);
void *conf_realloc(void *p, size_t n);
char *conf_strndup(const char *s, size_t n);
char *conf_strdup(const char *s);

/* Errors: "FILE:LINE: LABEL: message" to ld->errs, each one counted in ld->nerrors. */
void conf_error(struct conf_loader *ld, struct conf_loc at, const char *label, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));
void conf_oom(struct conf_loader *ld, struct conf_loc at);
const char *conf_quote(char *buf, const char *v);
void conf_label_directive(const struct conf_directive *d, const char *arg, char *buf,
                          size_t cap);

/* The directive `name` of section `sec` and its index in conf_directives, or NULL. */
const struct conf_directive *conf_find(enum conf_section sec, const char *name, unsigned *index);

/* ------------------------------------------------------------------------------------------ */
/* config_values.c                                                                            */

const char *conf_expect(const struct conf_directive *d, char *buf, size_t cap);
int conf_hidden(const struct conf_directive *d);
int conf_valid_name(const char *s, size_t len, size_t max, const char *extra);
char *conf_path(const char *file, const char *p);
void conf_set(struct conf_loader *ld, struct conf_loc at, const char *label,
              const struct conf_directive *d, void *base, const char *v);

/* ------------------------------------------------------------------------------------------ */
/* config_check.c                                                                             */

/* The checks of the whole configuration, once every file is read: errors reported,
 * derived fields (max_images, aliases, keys' limits and models) filled in. */
void conf_finish(struct conf_loader *ld);

#endif
