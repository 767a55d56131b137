#ifndef GATEHOUSE_CSQLITE_SHIM_H
#define GATEHOUSE_CSQLITE_SHIM_H
/* SQLite's C API (Debian: libsqlite3-dev), for the SQLiteDB module. */
#include <sqlite3.h>

/* Refuses double-quoted string literals ("x" is an identifier, never a string), as GRDB
 * configured its connections: sqlite3_db_config is variadic, which Swift cannot call. */
static inline void gh_sqlite3_disable_dqs(sqlite3 *db) {
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DDL, 0, (void *)0);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DML, 0, (void *)0);
}
#endif
