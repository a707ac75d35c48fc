/*
 * jsonbody.h - the JSON form of a create/remix request: validate, observe the
 * fields, rewrite `model`. Pure (cJSON).
 *
 * JSON bodies carry no files, so the proxy holds them whole (bounded by
 * max_json_body, 413 past it) and calls this once.
 */
#ifndef GW_JSONBODY_H
#define GW_JSONBODY_H

#include "multipart.h"

/*
 * body must be a JSON object. For each top-level member whose value is a string
 * or a number, hooks->on_field(name, value-as-text) is called (numbers in their
 * shortest text form, e.g. 8 -> "8"); then, if a "model" member exists and is a
 * string, hooks->on_model(); then hooks->on_end(). Any hook's GW_ERR is returned.
 *
 * On GW_OK, *out is NULL when the body is to be sent unchanged, or a malloc'd
 * rewritten body (*out_len bytes; the caller frees it) where only the model value
 * differs; member order and all other values are preserved.
 * Errors: not JSON / not an object -> 400 invalid_request_error / invalid_json;
 * "model" present but not a string -> 400 invalid_type, param "model".
 */
int gw_jsonbody_rewrite(struct gw_str body, const struct gw_mp_hooks *hooks, void *arg,
                        char **out, size_t *out_len, struct gw_error *err);

#endif
