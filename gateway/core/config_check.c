/*
 * config_check.c - the checks of a whole configuration, once every file is read:
 * required directives, settings that go together, aliases pointing at declared
 * models, keys' limits and model allowlists filled in from [limits] and the
 * catalog. Pure. Every error is reported with the place the setting (or its
 * section) was written.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_int.h"

static const int family_images[] = { 1, 2, 3 }; /* max input_reference images per family */

static void conf_missing(struct conf_loader *ld, struct conf_loc at, const char *arg,
                         const struct conf_directive *d)
{
    char label[CONF_LABEL_BUF], exp[160];

    conf_label_directive(d, arg, label, sizeof(label));
    conf_error(ld, at, label, "expected %s, got nothing", conf_expect(d, exp, sizeof(exp)));
}

static void conf_check_required(struct conf_loader *ld)
{
    struct gw_config *cfg = ld->cfg;
    struct conf_loc main_at = { ld->files[0], 0 };

    for (unsigned k = 0; k < CONF_NDIRECTIVES; k++) {
        const struct conf_directive *d = &conf_directives[k];
        uint64_t bit = (uint64_t)1 << k;

        if (!(d->flags & CONF_REQUIRED))
            continue;
        if (d->section == SEC_MODEL) {
            for (unsigned i = 0; i < cfg->catalog.nmodels; i++) {
                if (!(ld->minst[i].seen & bit))
                    conf_missing(ld, ld->minst[i].at, cfg->catalog.models[i].name, d);
            }
        } else if (d->section == SEC_KEY) {
            for (unsigned i = 0; i < cfg->nkeys; i++) {
                if (!(ld->kinst[i].seen & bit))
                    conf_missing(ld, ld->kinst[i].at, cfg->keys[i].name, d);
            }
        } else if (!(ld->top.seen & bit)) {
            struct conf_loc at = ld->section_at[d->section];

            conf_missing(ld, at.line > 0 ? at : main_at, NULL, d);
        }
    }
}

static void conf_check_tls(struct conf_loader *ld)
{
    unsigned cert = 0, key = 0;
    uint64_t cbit, kbit;
    char label[CONF_LABEL_BUF];

    conf_find(SEC_SERVER, "tls_cert", &cert);
    conf_find(SEC_SERVER, "tls_key", &key);
    cbit = ld->top.seen & ((uint64_t)1 << cert);
    kbit = ld->top.seen & ((uint64_t)1 << key);
    if (!cbit == !kbit)
        return;
    conf_label_directive(&conf_directives[cbit ? key : cert], NULL, label, sizeof(label));
    conf_error(ld, ld->top.set_at[cbit ? cert : key], label,
               "expected a file path (tls_cert and tls_key go together), got nothing");
}

/* Aliases point at models; checked once the whole config is read. */
static void conf_link_aliases(struct conf_loader *ld)
{
    struct gw_catalog *cat = &ld->cfg->catalog;
    char label[CONF_LABEL_BUF], q[CONF_QUOTE_BUF];

    if (ld->naliases == 0)
        return;
    cat->aliases = conf_calloc(ld->naliases, sizeof(*cat->aliases));
    if (cat->aliases == NULL) {
        conf_oom(ld, ld->aliases[0].at);
        return;
    }
    for (unsigned i = 0; i < ld->naliases; i++) {
        struct conf_alias *a = &ld->aliases[i];
        const struct gw_model *m = gw_catalog_find(cat, (struct gw_str){ a->to, strlen(a->to) });

        if (m == NULL) {
            snprintf(label, sizeof(label), "aliases.%s", a->from);
            conf_error(ld, a->at, label, "expected a model declared with [model NAME], got %s",
                       conf_quote(q, a->to));
            continue;
        }
        cat->aliases[cat->naliases].from = a->from;
        cat->aliases[cat->naliases].to = m;
        cat->naliases++;
        a->from = NULL;
    }
}

/* A key's limits not set in its [key NAME] section are [limits]' values. */
static void conf_inherit_limits(struct conf_loader *ld)
{
    static const char *const names[] = { "rpm", "burst", "concurrency", "daily_seconds" };
    struct gw_config *cfg = ld->cfg;

    for (unsigned k = 0; k < GW_ARRAY_LEN(names); k++) {
        unsigned idx = 0;
        const struct conf_directive *d = conf_find(SEC_KEY, names[k], &idx);
        size_t off = d->offset - offsetof(struct gw_team_key, limits);

        for (unsigned i = 0; i < cfg->nkeys; i++) {
            if (!(ld->kinst[i].seen & ((uint64_t)1 << idx)))
                memcpy((char *)&cfg->keys[i].limits + off, (char *)&cfg->limits + off,
                       sizeof(int));
        }
    }
}

/* A key's model allowlist names aliases or models; kept as the names sent upstream,
 * which is what a request resolves to. */
static void conf_resolve_key_models(struct conf_loader *ld)
{
    struct gw_config *cfg = ld->cfg;
    char label[CONF_LABEL_BUF], q[CONF_QUOTE_BUF];
    unsigned idx = 0;

    conf_find(SEC_KEY, "models", &idx);
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        struct gw_names *m = &cfg->keys[i].models;
        for (unsigned j = 0; j < m->n; j++) {
            struct gw_resolved r;
            struct gw_error err;
            if (gw_catalog_resolve(&cfg->catalog, (struct gw_str){ m->v[j], strlen(m->v[j]) },
                                   &r, &err) != GW_OK || r.model == NULL) {
                if (r.model == NULL && cfg->catalog.allow_unknown)
                    continue; /* [models] unknown = pass: names outside the catalog too */
                snprintf(label, sizeof(label), "key %s.models", cfg->keys[i].name);
                conf_error(ld, ld->kinst[i].set_at[idx], label,
                           "expected models or aliases of the catalog, got %s",
                           conf_quote(q, m->v[j]));
                continue;
            }
            if (strcmp(m->v[j], r.model->name) != 0) {
                char *canon = conf_strdup(r.model->name);
                if (canon == NULL) {
                    conf_oom(ld, ld->kinst[i].set_at[idx]);
                    continue;
                }
                free(m->v[j]);
                m->v[j] = canon;
            }
        }
    }
}

void conf_finish(struct conf_loader *ld)
{
    struct gw_catalog *cat = &ld->cfg->catalog;

    conf_check_required(ld);
    conf_check_tls(ld);
    for (unsigned i = 0; i < cat->nmodels; i++)
        cat->models[i].max_images = family_images[cat->models[i].family];
    conf_link_aliases(ld);
    conf_inherit_limits(ld);
    conf_resolve_key_models(ld);
}
