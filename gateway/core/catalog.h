/*
 * catalog.h - model names the gateway accepts: aliases and capabilities. Pure.
 *
 * The catalog is built once per config load and then only read (shared by all
 * threads without locks; a reload builds a new one).
 */
#ifndef GW_CATALOG_H
#define GW_CATALOG_H

#include "gw.h"

/* What input_reference may hold, per the seed's model families. */
enum gw_family {
    GW_FAMILY_FIRST = 0,   /* first frame or text: at most 1 image */
    GW_FAMILY_FRAMES,      /* first+last frames, first frame, or text: at most 2 */
    GW_FAMILY_COMPONENTS,  /* 1 to 3 reference images, or text: at most 3 */
};

#define GW_CATALOG_MAX_LIST 16

struct gw_model {
    char *name;             /* upstream model name (what is sent), e.g. "veo_3_1" */
    enum gw_family family;
    int max_images;         /* derived from family */
    /* Allowed values; n == 0 means "any". */
    char *seconds[GW_CATALOG_MAX_LIST];
    unsigned nseconds;
    char *sizes[GW_CATALOG_MAX_LIST];
    unsigned nsizes;
    /* issue 9: the follow-up operations the service offers for this model's videos */
    int edits;              /* POST /v1/videos/edits on its videos: 1 yes, 0 no */
    int extensions;         /* POST /v1/videos/extensions: 1 yes, 0 no */
    char *extend_seconds[GW_CATALOG_MAX_LIST]; /* an extension's `seconds`; n == 0: any */
    unsigned nextend_seconds;
};

/* The operations on an existing video the catalog knows per model. */
enum gw_video_op {
    GW_VIDEO_OP_EDIT = 0,
    GW_VIDEO_OP_EXTEND,
};

struct gw_alias {
    char *from;             /* friendly name as clients send it, exact, case-sensitive */
    const struct gw_model *to;
};

struct gw_catalog {
    struct gw_model *models;
    unsigned nmodels;
    struct gw_alias *aliases;
    unsigned naliases;
    int allow_unknown;      /* 1: unknown models pass through unchanged; 0: 400 */
    int characters;         /* 1: the service offers /v1/videos/characters; 0: 404 */
};

/* The result of resolving what a client asked for. */
struct gw_resolved {
    struct gw_str sent;           /* the name to send upstream (borrowed from catalog or input) */
    const struct gw_model *model; /* NULL for an unknown model let through */
};

/* The model declared under exactly this name (case-sensitive), or NULL. Aliases are
 * not consulted. The lookup is a linear scan today; callers must not rely on that. */
const struct gw_model *gw_catalog_find(const struct gw_catalog *c, struct gw_str name);

/*
 * Resolve a client's model value: an alias maps to its target, a catalog name
 * maps to itself, anything else is unknown (passed unchanged when allow_unknown,
 * otherwise GW_ERR: 400 invalid_request_error / model_not_found, param "model").
 * An empty value is GW_ERR (400 missing_required_parameter, param "model").
 */
int gw_catalog_resolve(const struct gw_catalog *c, struct gw_str asked, struct gw_resolved *out,
                       struct gw_error *err);

/* Check an `input_reference` count against the model (no-op for unknown models):
 * GW_ERR 400 invalid_request_error / too_many_images, param "input_reference". */
int gw_catalog_check_images(const struct gw_model *m, unsigned nimages, struct gw_error *err);

/* Check seconds / size values against the model's lists (no-op when unlisted or
 * model unknown): GW_ERR 400 invalid_request_error / invalid_value, param "seconds" / "size". */
int gw_catalog_check_seconds(const struct gw_model *m, struct gw_str seconds, struct gw_error *err);
int gw_catalog_check_size(const struct gw_model *m, struct gw_str size, struct gw_error *err);

/*
 * May op be applied to a video made by model m? m NULL: the model is not known -
 * an uploaded video (any = 1: fine if some model of the catalog offers op, or
 * unknown models pass), or a source job whose model the catalog does not hold
 * (any = 0: fine only when unknown models pass). GW_ERR: 400 invalid_request_error /
 * unsupported_operation, param "video".
 */
int gw_catalog_check_op(const struct gw_catalog *c, const struct gw_model *m, int any,
                        enum gw_video_op op, struct gw_error *err);

/* An extension's seconds: listed in m's extend_seconds (m NULL, any = 1: in the list
 * of some model that offers extensions; any = 0: not checked). GW_ERR: 400
 * invalid_value, param "seconds". */
int gw_catalog_check_extend_seconds(const struct gw_catalog *c, const struct gw_model *m,
                                    int any, struct gw_str seconds, struct gw_error *err);

void gw_catalog_free(struct gw_catalog *c);

#endif
