/*
 * main.c - command line and wiring only:
 *   gateway [-c FILE]          run
 *   gateway -t [-c FILE]       check the configuration and exit
 *   gateway mint-key NAME      print a new team key once, and its config stanza
 *   gateway usage [...]        usage per key and model (cli_usage.c)
 *   gateway keys ...           keys kept in the store (cli_keys.c)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "accesslog.h"
#include "auth.h"
#include "cli_keys.h"
#include "cli_usage.h"
#include "config.h"
#include "log.h"
#include "ops.h"
#include "server.h"


static int usage(FILE *f)
{
    fprintf(f, "usage: gateway [-c FILE]        run (default FILE: gateway.conf)\n"
               "       gateway -t [-c FILE]     check the configuration and exit\n"
               "       gateway mint-key NAME    print a new team key and its [key NAME] stanza\n"
               "       gateway usage [-c FILE] [--since DATE] [--until DATE] [--key NAME]\n"
               "                     [--by-day] [--json]\n"
               "                                video-seconds per key and model (usage -h)\n"
               "       gateway keys add|list|set|revoke ...\n"
               "                                keys kept in the store (keys -h)\n"
               "       gateway -v               print the version\n");
    return f == stderr ? 2 : 0;
}

static int mint_key(const char *name)
{
    unsigned char digest[32];
    char key[GW_AUTH_SECRET_LEN + 1];

    /* (an empty name made a "[key ]" stanza that the config then refuses) */
    if (gw_store_key_name_ok(name) != GW_OK) {
        fprintf(stderr, "gateway: key names are 1-64 characters of [A-Za-z0-9_.-]\n");
        return 2;
    }
    if (gw_auth_new_secret(key, digest) != GW_OK) {
        fprintf(stderr, "gateway: no randomness available\n");
        return 1;
    }
    printf("# Team key for \"%s\" (shown once; give it to its owner, it is not stored):\n"
           "#   %s\n"
           "# Paste into gateway.conf:\n[key %s]\nsha256 = ",
           name, key, name);
    for (size_t i = 0; i < sizeof(digest); i++)
        printf("%02x", digest[i]);
    printf("\n");
    return 0;
}

/* config.c (pure) only checks that tls_cert and tls_key are readable files;
 * load them here as the listener will, so that `-t` catches a file that is not
 * PEM or a key that does not match the certificate (libevhtp's own loading
 * reports success regardless: libevhtp-notes trap 8). */
static int check_tls_files(const struct gw_config *cfg)
{
    SSL_CTX *ctx;
    int ok;

    if (cfg->tls_cert == NULL)
        return GW_OK;
    ctx = SSL_CTX_new(TLS_server_method());
    ok = ctx != NULL && SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) == 1 &&
         SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) == 1 &&
         SSL_CTX_check_private_key(ctx) == 1;
    SSL_CTX_free(ctx);
    ERR_clear_error();
    if (ok)
        return GW_OK;
    fprintf(stderr, "%s: server.tls_cert, server.tls_key: expected a PEM certificate and its "
                    "private key, got \"%s\" and \"%s\"\n",
            cfg->path, cfg->tls_cert, cfg->tls_key);
    return GW_ERR;
}

int main(int argc, char **argv)
{
    const char *path = "gateway.conf";
    int check = 0, opt;
    struct gw_config *cfg;
    struct gw_server *srv;
    struct gw_error err;

    if (argc >= 2 && strcmp(argv[1], "mint-key") == 0)
        return argc == 3 ? mint_key(argv[2]) : usage(stderr);
    if (argc >= 2 && strcmp(argv[1], "usage") == 0)
        return gw_cli_usage(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "keys") == 0)
        return gw_cli_keys(argc - 1, argv + 1);
    while ((opt = getopt(argc, argv, "c:thv")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = 1;
            break;
        case 'v':
            printf("gateway %s\n", GW_VERSION);
            return 0;
        case 'h':
            return usage(stdout);
        default:
            return usage(stderr);
        }
    }
    if (optind != argc)
        return usage(stderr);
    cfg = gw_config_load(path, stderr);
    if (cfg != NULL && check_tls_files(cfg) != GW_OK) {
        gw_config_free(cfg);
        cfg = NULL;
    }
    if (cfg == NULL) {
        fprintf(stderr, "gateway: configuration %s has errors\n", path);
        return 1;
    }
    if (check) {
        printf("gateway: configuration %s is ok\n", path);
        gw_config_free(cfg);
        return 0;
    }
    gw_log_level = cfg->log_level;
    if (gw_accesslog_open(cfg->access_log) != GW_OK) {
        fprintf(stderr, "gateway: cannot open access log %s\n", cfg->access_log);
        return 1;
    }
    srv = gw_server_new(cfg, &err);
    if (srv == NULL) {
        gw_log(GW_LOG_ERROR, "%s", err.message);
        return 1;
    }
    gw_server_run(srv);
    gw_server_free(srv);
    gw_config_free(cfg);
    return 0;
}
