/*
 * admin_console.h - the console's files, embedded at build time (cmake/embed.cmake
 * writes console_files.c from gateway/admin/console/).
 */
#ifndef GW_ADMIN_CONSOLE_H
#define GW_ADMIN_CONSOLE_H

#include <stddef.h>

struct gw_console_file {
    const char *path;         /* "/admin/", "/admin/app.js"... */
    const char *ctype;
    const unsigned char *data;
    size_t len;
};

extern const struct gw_console_file gw_console_files[];
extern const size_t gw_console_nfiles;

#endif
