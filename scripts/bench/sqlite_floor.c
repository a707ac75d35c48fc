/*
 * sqlite_floor.c - for scripts/bench.sh: what SQLite alone costs per job row,
 * the floor under issue 6's "at most 3 us more per create".
 *
 *   sqlite_floor STORE COPY ROWS BATCH...
 *
 * STORE is a store file the gateway wrote (1S's; it may be in use: it is
 * read as one snapshot), copied to COPY (VACUUM INTO) for its schema, its
 * indexes and its rows, with one of them as the model. For each BATCH, ROWS new
 * rows (that row with a fresh id each) are inserted in transactions of BATCH
 * rows, as the store thread does (WAL, synchronous = normal, one prepared
 * INSERT), and the process's CPU per row is printed:
 *
 *   FLOOR batch=B us_per_row=X
 *
 * Nothing of the gateway runs: no queue, no thread hand-off, no savepoint, no
 * usage upsert. So this is less than any store of one row per job can cost.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double cpu_s(void)
{
    struct rusage r;

    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "sqlite_floor: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

int main(int argc, char **argv)
{
    sqlite3 *db;
    sqlite3_stmt *model, *ins;
    char sql[4096], cols[2048] = "", marks[1024] = "";
    int ncol, idcol = -1;
    long rows;

    if (argc < 5 || (rows = atol(argv[3])) <= 0) {
        fprintf(stderr, "usage: sqlite_floor STORE COPY ROWS BATCH...\n");
        return 2;
    }
    if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        die(db, "open the store");
    snprintf(sql, sizeof(sql), "VACUUM INTO '%s'", argv[2]);
    if (strchr(argv[2], '\'') != NULL || sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(db, "copy the store");
    sqlite3_close(db);
    if (sqlite3_open(argv[2], &db) != SQLITE_OK)
        die(db, "open the copy");
    if (sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", NULL, NULL,
                     NULL) != SQLITE_OK)
        die(db, "pragmas");
    /* the model row: every column but the rowid alias (seq) */
    if (sqlite3_prepare_v2(db, "SELECT * FROM jobs ORDER BY seq DESC LIMIT 1", -1, &model,
                           NULL) != SQLITE_OK || sqlite3_step(model) != SQLITE_ROW)
        die(db, "no jobs row to copy");
    ncol = sqlite3_column_count(model);
    for (int i = 0, n = 0; i < ncol; i++) {
        const char *name = sqlite3_column_name(model, i);
        if (strcmp(name, "seq") == 0)
            continue;
        if (strcmp(name, "id") == 0)
            idcol = i;
        snprintf(cols + strlen(cols), sizeof(cols) - strlen(cols), "%s%s", n ? "," : "", name);
        snprintf(marks + strlen(marks), sizeof(marks) - strlen(marks), "%s?%d", n ? "," : "",
                 i + 1);
        n++;
    }
    if (idcol < 0)
        die(db, "no id column");
    snprintf(sql, sizeof(sql), "INSERT INTO jobs(%s) VALUES(%s)", cols, marks);
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &ins, NULL) != SQLITE_OK)
        die(db, "prepare");
    for (int i = 0; i < ncol; i++)
        if (i != idcol && strcmp(sqlite3_column_name(model, i), "seq") != 0)
            sqlite3_bind_value(ins, i + 1, sqlite3_column_value(model, i));

    for (int a = 4; a < argc; a++) {
        long batch = atol(argv[a]), done = 0;
        char id[64];
        double c0;

        if (batch <= 0)
            continue;
        c0 = cpu_s();
        while (done < rows) {
            if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
                die(db, "begin");
            for (long k = 0; k < batch && done < rows; k++, done++) {
                /* random-looking, as the upstream's ids are */
                snprintf(id, sizeof(id), "video_floor%ld_%016llx", batch,
                         (unsigned long long)done * 0x9e3779b97f4a7c15ULL);
                sqlite3_bind_text(ins, idcol + 1, id, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(ins) != SQLITE_DONE)
                    die(db, "insert");
                sqlite3_reset(ins);
            }
            if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                die(db, "commit");
        }
        printf("FLOOR batch=%ld us_per_row=%.2f\n", batch, (cpu_s() - c0) * 1e6 / (double)rows);
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(model);
    sqlite3_close(db);
    return 0;
}
