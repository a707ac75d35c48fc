/*
 * auth.c - team key check. Every configured hash is compared (CRYPTO_memcmp, no
 * early exit), so the time taken does not depend on which key matched; the
 * store's keys are found by a binary search on their digests (keytab.h).
 */
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth.h"

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const struct gw_team_key *gw_auth_check(const struct gw_config *cfg, const struct gw_keytab *tab,
                                        const char *authorization, int64_t now_unix_ms)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const struct gw_team_key *found = NULL;
    const char *key;
    size_t len;

    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    key = authorization + 7;
    while (*key == ' ')
        key++;
    len = strlen(key);
    while (len > 0 && (key[len - 1] == ' ' || key[len - 1] == '\t'))
        len--;
    if (len == 0)
        return NULL;
    /* SHA256() looks the algorithm up again on every call (OpenSSL 3): fetch it
     * once; the fetched implementation is shared read-only by all threads */
    pthread_once(&sha256_once, fetch_sha256);
    if (sha256_md == NULL || EVP_Digest(key, len, digest, NULL, sha256_md, NULL) != 1)
        return NULL;
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        if (CRYPTO_memcmp(digest, cfg->keys[i].sha256, sizeof(digest)) == 0)
            found = &cfg->keys[i];
    }
    /* the store's keys, possibly thousands: a search by digest (keytab.h says why
     * that leaks nothing useful); the config's few keep the scan above */
    if (found == NULL)
        found = gw_keytab_lookup(tab, digest);
    OPENSSL_cleanse(digest, sizeof(digest));
    /* an expired key is refused like an unknown one: no hint that it existed */
    if (found != NULL && found->expires_ms != 0 && now_unix_ms >= found->expires_ms)
        return NULL;
    return found;
}

int gw_auth_new_secret(char key[GW_AUTH_SECRET_LEN + 1], unsigned char sha256[32])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static const char prefix[] = "sk-vgw-";
    unsigned char rnd[GW_AUTH_SECRET_LEN - sizeof(prefix) + 1];
    size_t off = sizeof(prefix) - 1;

    _Static_assert(sizeof(alphabet) - 1 == 64, "6 bits a character");
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return GW_ERR;
    memcpy(key, prefix, off);
    for (size_t i = 0; i < sizeof(rnd); i++)
        key[off++] = alphabet[rnd[i] & 63];
    key[off] = '\0';
    OPENSSL_cleanse(rnd, sizeof(rnd));
    pthread_once(&sha256_once, fetch_sha256);
    if (sha256_md == NULL || EVP_Digest(key, off, sha256, NULL, sha256_md, NULL) != 1)
        return GW_ERR;
    return GW_OK;
}
