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
 * shortest text form, e.g. 8 -> "8", except `seconds`, given as written); then, if a
 * "model" member exists, hooks->on_model(); then hooks->on_end(). Any hook's GW_ERR
 * is returned.
 *
 * As for multipart, on_field gets the first GW_MP_VALUE_MAX bytes of a value and
 * its real length in total_len.
 *
 * On GW_OK, *out is NULL when the body is to be sent unchanged (no model, or
 * on_model kept it), or a malloc'd rewritten body (*out_len bytes; the caller
 * frees it): the original bytes with only the model string spliced in, so member
 * order, whitespace and number spellings are preserved exactly.
 * Errors (400, type invalid_request_error): not JSON / not an object / trailing
 * bytes -> invalid_json; a \u0000 escape anywhere -> invalid_json (cJSON would
 * cut the string where the upstream does not); a member the gateway checks of
 * another JSON type than the one it checks it as -> invalid_type, param its name:
 * "model", "prompt" and "size" must be strings, "seconds" a string or a number,
 * null is refused for each (it is not "absent" for every upstream); "seconds" not
 * a whole number written with digits only ("8" or 8, not 8.5, 8.0, 1e1, -8, 08,
 * "8s") -> invalid_value, param "seconds"; "model" twice, or longer than
 * GW_MP_VALUE_MAX -> invalid_value, param "model". A hook's error is returned as
 * the hook set it.
 *
 * Members that name other objects (edits, extensions, creates): `video` must be
 * {"id": string} (else 400 invalid_type, param "video") and is observed as the
 * field "video[id]", as the SDKs send it in a form (a member named "video[id]" is
 * refused: 400 invalid_value, param "video"); `characters` (or a member named
 * characters[...]), of any type, is observed as the field "characters" with its JSON
 * text as the value.
 */
int gw_jsonbody_rewrite(struct gw_str body, const struct gw_mp_hooks *hooks, void *arg,
                        char **out, size_t *out_len, struct gw_error *err);

#endif
